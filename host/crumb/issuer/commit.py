"""The commit step's signing and chaining: native when crumb._commit is built, Python otherwise.

The audit writer thread signs a batch of tokens and hash-chains the batch's
records right before it commits them (audit.py). Done there, signing runs on
the machine's other core while the event loop serves requests, and a token
cannot exist (it has no signature) until its record is being committed.

That only pays if the whole batch runs without the GIL: from Python each
libsodium call gives the GIL up and must wait to take it back from the busy
event loop. crumb._commit (host/crumb/_commit.c) does the batch in one call
with the GIL released, calling the libsodium that PyNaCl ships. Without it
(no C compiler at install time) the issuer signs on its event loop as it
always could: same tokens, less throughput.
"""

from __future__ import annotations

import hashlib
import os

from ..keys import SigningKey

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

# CRUMB_NATIVE_COMMIT=0 turns the native step off (to compare the two paths).
NATIVE = _native is not None and os.environ.get("CRUMB_NATIVE_COMMIT", "1") != "0"


def describe() -> str:
    if NATIVE:
        return "signing, chaining and committing on the audit writer thread without the GIL (crumb._commit)"
    why = "turned off by CRUMB_NATIVE_COMMIT=0" if _native is not None else "crumb._commit is not built"
    return f"signing on the event loop ({why})"


def chain(prev: bytes, seq: int, bodies: list[bytes]) -> list[bytes]:
    """Hashes of records seq, seq+1, ... after a record whose hash is ``prev`` (audit.record_hash, chained)."""
    if NATIVE and bodies:
        return _native.sign_and_chain(_SIGN, _SHA256, bytes(64), [], prev, seq, bodies)[1]
    out = []
    sha256 = hashlib.sha256
    for body in bodies:
        prev = sha256(prev + seq.to_bytes(8, "big") + body).digest()
        out.append(prev)
        seq += 1
    return out


def sign_and_chain(key: SigningKey, messages: list[bytes], prev: bytes, seq: int,
                   bodies: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(signatures of messages under key, chained hashes of bodies), in one GIL-free call."""
    assert NATIVE
    return _native.sign_and_chain(_SIGN, _SHA256, key.secret_bytes, messages, prev, seq, bodies)


# The native writer (crumb._commit.writer_*): see AuditLog._start_native. Submit and
# collect run on the event loop for every batch: bound straight to the C functions.

def native_writer(path, sync: str, efd: int, head: tuple[int, bytes]):
    return _native.writer_new(writer_addresses(), str(path), sync, efd, head[0], head[1])


def native_writer_set_head(writer, head: tuple[int, bytes]) -> None:
    _native.writer_set_head(writer, head[0], head[1])


if _native is not None:
    native_writer_serve = _native.writer_serve        # (writer): blocks without the GIL until stopped
    native_writer_submit = _native.writer_submit      # (writer, job id, secret key or None, messages, bodies)
    native_writer_collect = _native.writer_collect    # (writer) -> [(job id, first seq, signatures, error)]
    native_writer_stop = _native.writer_stop          # (writer): finish the queue, then return from serve
