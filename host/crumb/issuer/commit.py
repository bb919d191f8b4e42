"""The native audit writer (crumb._commit), and what it is given to run.

With crumb._commit built, the audit writer thread signs each batch of
tokens, hash-chains the batch's records and commits them, all without the
GIL (host/crumb/_commit.c says why that matters), so signing runs on the
machine's other core while the event loop serves requests, and a token has
no signature until its record is being committed. Without it (no C compiler
when crumb was installed, or CRUMB_NATIVE_COMMIT=0) the issuer signs on its
event loop and a Python thread commits (audit.py): same tokens, same log,
less throughput.
"""

from __future__ import annotations

import os

try:  # the optional extension, and the libsodium functions it calls
    from nacl._sodium import ffi as _ffi, lib as _lib

    from .. import _commit as _native

    _SIGN = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "crypto_sign")))
    _SHA256 = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "crypto_hash_sha256")))
except (ImportError, AttributeError):  # pragma: no cover - exercised where the extension is absent
    _native = None

_SQLITE = ("sqlite3_open_v2", "sqlite3_close", "sqlite3_exec", "sqlite3_prepare_v2", "sqlite3_bind_int64",
           "sqlite3_bind_blob", "sqlite3_step", "sqlite3_reset", "sqlite3_finalize", "sqlite3_errmsg",
           "sqlite3_busy_timeout")


def writer_addresses() -> tuple[int, ...]:
    """libsodium's sign and SHA-256, then SQLite's C API, as crumb._commit.writer_new takes them.

    SQLite's functions are looked up through Python's own sqlite3 module, so
    the writer uses the very SQLite library (and its file locks) the rest of
    the process does.
    """
    import ctypes

    import _sqlite3

    lib = ctypes.CDLL(_sqlite3.__file__)
    return (_SIGN, _SHA256, *(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in _SQLITE))

# CRUMB_NATIVE_COMMIT=0 turns the native writer off (to compare the two paths).
NATIVE = _native is not None and os.environ.get("CRUMB_NATIVE_COMMIT", "1") != "0"


def describe() -> str:
    if NATIVE:
        return "signing, chaining and committing on the audit writer thread without the GIL (crumb._commit)"
    why = "turned off by CRUMB_NATIVE_COMMIT=0" if _native is not None else "crumb._commit is not built"
    return f"signing on the event loop ({why})"


# The native writer (crumb._commit.writer_*): see AuditLog._start_native. Submit and
# collect run on the event loop for every batch: bound straight to the C functions.

def native_writer(path, sync: str, efd: int, head: tuple[int, bytes]):
    return _native.writer_new(writer_addresses(), str(path), sync, efd, head[0], head[1])


def native_writer_set_head(writer, head: tuple[int, bytes]) -> None:
    _native.writer_set_head(writer, head[0], head[1])


if _native is not None:
    native_writer_serve = _native.writer_serve        # (writer): blocks without the GIL until stopped
    native_writer_submit = _native.writer_submit      # (writer, job id, secret key or None, messages, bodies)
    native_writer_collect = _native.writer_collect    # (writer) -> [(job id, first seq, signatures, error, group)]
    native_writer_stop = _native.writer_stop          # (writer): finish the queue, then return from serve
