"""The one hash-chain format every crumb log uses: the issuer's audit log and the services' logs.

A record is a JSON object written as canonical text (sorted keys, no spaces,
UTF-8 as is). Record n stores that body, the hash of record n-1 and its own
hash = SHA-256(hash of record n-1 || n as 8 bytes big-endian || body); the
first record links to 32 zero bytes. The issuer (crumb.issuer.audit, with its
segments and native writer) and the services (crumb.services.servicelog, an
SQLite file; crumb.services.pg, a table) all write and check records through
the functions here, so one `crumb audit verify` reads every one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from json.encoder import encode_basestring as _quote
from pathlib import Path
from typing import NamedTuple

GENESIS = bytes(32)

# The SQLite table of a chain (the issuer's segments and a service's log file alike).
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq  INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def record_hash(prev: bytes, seq: int, body: bytes) -> bytes:
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + body).digest()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(record: dict) -> str:
    """Sorted keys, no spaces, UTF-8 as is: one record, one text."""
    return _ENCODER.encode(record)


def quote(value: str) -> str:
    """A JSON string exactly as canonical() writes it (for writers that build the text around values)."""
    return _quote(value)


def encode(value: object) -> str:
    return _ENCODER.encode(value)


def connect(path: Path, sync: str = "FULL") -> sqlite3.Connection:
    """An autocommit connection to a chain's SQLite file, its table created if new."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.executescript(SCHEMA)
    return conn


# -- was the commit kept? ----------------------------------------------------------------

READ_ONLY_WHY = ("the file system under the audit log turned read-only (or the segment file is gone): "
                 "the commit cannot be trusted")


def probe_path(chain: Path) -> Path:
    """The chain writer's probe file (see commit_doubt), beside the chain's first file: DATA/audit.db.probe."""
    return chain.with_name(chain.name + ".probe")


class Probe:
    """An open probe file whose size the writer flips between 0 and 1 after each commit (commit_doubt)."""

    def __init__(self, path: Path) -> None:
        # Opened at start, so a probe that cannot be made fails the start, not each request.
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = 0

    def flip(self) -> None:
        self.size ^= 1
        os.ftruncate(self.fd, self.size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def commit_doubt(segment: Path, probe: Probe) -> str | None:
    """Whether a commit SQLite reported done can be trusted: None if so, else why not.

    Run after every commit that succeeded, before any of its tokens leaves;
    commit.c's commit_doubt is the same check. ext4 with errors=remount-ro,
    on an error, aborts its journal first and sets its "emergency read-only"
    flag some milliseconds later (never SB_RDONLY: statvfs shows no
    ST_RDONLY, /proc/mounts shows "emergency_ro"). An fdatasync that started
    before the flag can return 0 although the journal transaction holding the
    WAL's new size and extents was aborted, not committed: SQLite's commit
    says done, and the frames are gone at the next mount (seen with a kernel
    trace, ext4_sync_file_exit ret 0 after jbd2 ended the aborted
    transaction, and with a plain SQLite loop and no crumb code: about one
    run in five lost its last acknowledged commit; docs/issuer.md). The probe
    is a metadata change that must start a journal handle (the probe file's
    size flips between 0 and 1): ext4 refuses it with EROFS once the journal
    is aborted, and the abort is set before such an fdatasync returns, so
    a probe made after the commit sees it. The statvfs check catches a file
    system remounted read-only the ordinary way, and a segment file deleted
    under the writer (statvfs fails: its commits land in a file nobody can
    read).
    """
    try:
        if os.statvfs(segment).f_flag & os.ST_RDONLY:
            return READ_ONLY_WHY
    except OSError:
        return READ_ONLY_WHY  # the segment file is gone (deleted under the writer) or unreadable
    try:
        probe.flip()
    except OSError as e:
        return f"the file system under the audit log stopped taking writes (probe: {e.strerror}): " \
               "the commit cannot be trusted"
    return None



class Record(NamedTuple):
    seq: int
    body: bytes  # canonical JSON, UTF-8
    prev: bytes
    hash: bytes

    @property
    def data(self) -> dict:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Verdict(NamedTuple):
    ok: bool
    count: int  # type: ignore[assignment]  # records of the chain that hold (shadows tuple.count, as it always did)
    head: bytes            # hash of the last good record
    broken_at: int | None  # seq of the first broken record (or of the row outside the chain)
    reason: str | None
    rows: int = 0          # every row read: count when ok, more when not
    segments: int = 0      # segment files read (1 for a service log file or table)
    first: int = 1         # seq the chain starts at here (after an anchor, when older segments were pruned)


def row_problem(rec: Record, expect: int, prev: bytes, where: str = "") -> tuple[int, str] | None:
    """Why ``rec`` is not record ``expect`` linking to ``prev``: (seq to report, reason), or None if it holds.

    The rules every chain is checked by: every row is accounted for (a row
    numbered 0 or below, a repeat, a gap is a failure), each links to the one
    before, its hash covers its body, and the body is JSON.
    """
    if rec.seq < 1:
        return rec.seq, f"a row numbered {rec.seq} is outside the chain (records are numbered from 1)"
    if rec.seq < expect:
        return rec.seq, f"record {rec.seq} appears a second time{f' (in {where})' if where else ''}"
    if rec.seq != expect:
        return expect, f"record {expect} is missing (the next record is {rec.seq})"
    body = rec.body if isinstance(rec.body, bytes) else str(rec.body).encode()
    if bytes(rec.prev) != prev:
        return rec.seq, f"record {rec.seq} does not link to the record before it (prev hash differs)"
    if record_hash(prev, rec.seq, body) != bytes(rec.hash):
        return rec.seq, f"record {rec.seq} its content was changed (hash mismatch)"
    try:
        json.loads(body)
    except ValueError:
        return rec.seq, f"record {rec.seq} its body is not JSON"
    return None


def verify_rows(rows: Iterable[Record], head: bytes | None = None) -> Verdict:
    """Walk one unsegmented chain (a service's log file or table) from record 1; the first bad row breaks it."""
    expect, prev, count, total = 1, GENESIS, 0, 0
    found_head = head is None
    broken: tuple[int, str] | None = None
    for rec in rows:
        total += 1
        if broken is not None:
            continue  # counted, not verified: the chain is already broken before it
        rec = Record(rec.seq, bytes(rec.body), bytes(rec.prev), bytes(rec.hash))
        broken = row_problem(rec, expect, prev)
        if broken is None:
            prev, expect, count = rec.hash, expect + 1, count + 1
            found_head = found_head or prev == head
    if broken is not None:
        at, reason = broken
        after = total - count - 1
        if after > 0:
            reason += f"; {after} more row{'s' if after != 1 else ''} after it, unverified"
        return Verdict(False, count, prev, at, reason, total, 1)
    if not found_head:
        assert head is not None
        return Verdict(False, count, prev, expect,
                       f"the expected head {head.hex()} is not the hash of any record read here (records 1 to "
                       f"{expect - 1}, head {prev.hex()}): records were cut off the end or rewritten", total, 1)
    return Verdict(True, count, prev, None, None, total, 1)
