"""The issuer's native audit writer (crumb.issuer._native._commit, built from commit.c), if it may run here.

It is the issuer's only native code, and it exists for one reason: the
audit writer signs a batch of tokens, hash-chains the batch's records and
commits them, and a Python thread doing that needs the GIL back between
every step from a busy event loop (commit.c says more). The C writer
does all of it without the GIL, so signing runs on another core.

It runs only where all of this holds, and describe() says which failed:

  - CRUMB_NATIVE is not "0" (the switch that turns every native path off,
    to compare the two or to rule the C out);
  - Linux: results reach the event loop through an eventfd (setup.py builds
    the extension only there);
  - the extension was built (setup.py builds it when a C compiler, Python's
    headers, sodium.h and sqlite3.h are found, and installs crumb without
    it otherwise);
  - its SQLite is the very library Python's sqlite3 module uses. SQLite's
    POSIX advisory locks belong to the process, not to a library copy: a
    second copy of SQLite in the process does not see the first one's
    locks, and closing a file in one copy drops the locks the other holds
    on it, which can corrupt a database both open. The extension is linked
    against the system's libsqlite3 and Python's module usually is too;
    when it is not (a Python with SQLite built in, say), the Python writer
    runs.

Without it the issuer signs on its event loop and a Python thread commits
(audit.py): the same tokens and the same log, less throughput.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def _load() -> tuple[ModuleType | None, str]:
    """(the extension, "") or (None, why it does not run)."""
    if os.environ.get("CRUMB_NATIVE", "1") == "0":
        return None, "turned off by CRUMB_NATIVE=0"
    if not sys.platform.startswith("linux") or not hasattr(os, "eventfd"):
        return None, f"the native writer needs Linux (an eventfd), not {sys.platform}"
    try:
        _commit = importlib.import_module(f"{__name__}._commit")
    except ModuleNotFoundError:
        return None, ("crumb.issuer._native._commit is not built (it needs a C compiler, Python's headers, "
                      "libsodium-dev and libsqlite3-dev when crumb is installed)")
    except ImportError as e:  # built, but its libraries do not load (or libsodium does not start)
        return None, f"crumb.issuer._native._commit does not load: {e}"
    import sqlite3

    # A function of Python's own sqlite3 extension module: its __self__ is that module, whose
    # file the C side opens to see which SQLite it resolves sqlite3_libversion to.
    module_file = getattr(getattr(sqlite3.complete_statement, "__self__", None), "__file__", None)
    same, ours, theirs = _commit.same_sqlite(module_file)
    if not same:
        return None, (f"its SQLite ({ours}) is not the SQLite of Python's sqlite3 module "
                      f"({theirs or 'built into ' + (module_file or 'the interpreter')}): two copies of SQLite in "
                      "one process break each other's file locks")
    return _commit, ""


_ext, _why = _load()
NATIVE = _ext is not None


def describe() -> str:
    """One line for `crumb issuer serve` and `crumb bench issuer`: which audit writer runs, and why."""
    if _ext is not None:
        return ("native: signing, chaining and committing on the writer thread without the GIL "
                f"(crumb.issuer._native, libsodium {_ext.sodium_version()}, SQLite {_ext.sqlite_version()})")
    return f"Python: signing on the event loop, a Python thread commits ({_why})"


# The writer's C functions (AuditLog._start_native and its helpers call them; see commit.c):
#   writer_new(path, synchronous, eventfd, head seq, head hash, probe file path) -> writer
#   writer_submit(writer, job id, secret key or None, messages, bodies)
#   writer_serve(writer): blocks, without the GIL, until writer_stop and an empty queue
#   writer_collect(writer) -> [(job id, first seq, signatures, error or None, group)]
#   writer_rotate(writer, job id, path, schema SQL): switch to that segment (creating it) after what is queued
#   writer_stop(writer), writer_set_head(writer, seq, hash)
if _ext is not None:
    writer_new = _ext.writer_new
    writer_submit = _ext.writer_submit
    writer_serve = _ext.writer_serve
    writer_collect = _ext.writer_collect
    writer_stop = _ext.writer_stop
    writer_rotate = _ext.writer_rotate
    writer_set_head = _ext.writer_set_head
