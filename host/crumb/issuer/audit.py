"""The audit log: every issuance and every refusal, append-only, hash-chained, in SQLite.

Record n stores its body (canonical JSON, which includes ``seq``), the hash
of record n-1, and its own hash = SHA-256(hash of record n-1 || body). A
changed, removed, reordered or inserted record breaks the chain at that
record, and `crumb audit verify` names it. Cutting records off the end
leaves a valid shorter chain: keep the head hash `verify` prints somewhere
else (or pass it back with --head) to catch that too.

Commit strategy: group commit. Request handlers hand records to one writer
thread and wait; the writer takes everything queued, appends it in one
transaction (WAL, synchronous=FULL: durable once committed) and only then
releases the waiting handlers. So a token is never sent before its record
is on disk, and one fsync covers every request that arrived meanwhile. If
the commit fails, every waiting request fails with store_unavailable and no
token of that batch leaves the issuer. Several issuer processes may share
one log: each batch is appended inside BEGIN IMMEDIATE after reading the
current head, so the chain stays one chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator, NamedTuple

GENESIS = bytes(32)
MAX_BATCH = 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq  INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def record_hash(prev: bytes, body: str) -> bytes:
    return hashlib.sha256(prev + body.encode("utf-8")).digest()


def canonical(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def connect(path: Path, sync: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.executescript(SCHEMA)
    return conn


class AuditUnavailable(Exception):
    pass


class AuditLog:
    """The issuer's writer: ``await log.append(record)`` returns once the record is committed."""

    def __init__(self, path: Path, sync: str = "FULL") -> None:
        if sync.upper() not in ("FULL", "NORMAL"):
            raise ValueError("audit sync is FULL (durable at commit) or NORMAL (durable at checkpoint)")
        self.path = path
        self.sync = sync.upper()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.records = 0
        self.commits = 0
        self.failures = 0
        self.last_error: str | None = None
        connect(path, self.sync).close()  # create the schema now: fail at start, not per request

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="crumb-audit-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.last_error is None

    def append(self, record: dict) -> asyncio.Future:
        """Queue ``record`` (a JSON-able dict); the future gives its seq once committed."""
        assert self._loop is not None, "AuditLog.start() was not called"
        fut = self._loop.create_future()
        self._queue.put((record, fut))
        return fut

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        conn = connect(self.path, self.sync)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            item = get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(conn, batch)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list) -> None:
        futures = [fut for _, fut in batch]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = head if head else (0, GENESIS)
                rows = []
                for record, _ in batch:
                    seq += 1
                    record["seq"] = seq
                    body = canonical(record)
                    digest = record_hash(prev, body)
                    rows.append((seq, body, prev, digest))
                    prev = digest
                conn.executemany("INSERT INTO audit (seq, body, prev, hash) VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as e:  # disk full, locked too long, I/O error: nobody gets a token
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self._settle(futures, None, AuditUnavailable(f"the audit log cannot commit ({e})"))
            return
        self.records += len(rows)
        self.commits += 1
        self.last_error = None
        self._settle(futures, [r[0] for r in rows], None)

    def _settle(self, futures: list, seqs: list | None, error: Exception | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_wake, futures, seqs, error)
        except RuntimeError:  # the loop closed between the check and the call
            pass


def _wake(futures: list, seqs: list | None, error: Exception | None) -> None:
    for i, fut in enumerate(futures):
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(seqs[i])  # type: ignore[index]


# -- reading and verifying -----------------------------------------------------------


class Record(NamedTuple):
    seq: int
    body: str
    prev: bytes
    hash: bytes

    @property
    def data(self) -> dict:
        return json.loads(self.body)


def open_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no audit log at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    return conn


def records(path: Path, after: int = 0) -> Iterator[Record]:
    conn = open_readonly(path)
    try:
        for row in conn.execute("SELECT seq, body, prev, hash FROM audit WHERE seq > ? ORDER BY seq", (after,)):
            yield Record(*row)
    finally:
        conn.close()


def last(path: Path, n: int) -> list[Record]:
    conn = open_readonly(path)
    try:
        rows = conn.execute("SELECT seq, body, prev, hash FROM audit ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
    finally:
        conn.close()
    return [Record(*row) for row in reversed(rows)]


class Verdict(NamedTuple):
    ok: bool
    count: int
    head: bytes            # hash of the last good record
    broken_at: int | None  # seq of the first broken record
    reason: str | None


def verify(path: Path, head: bytes | None = None) -> Verdict:
    """Walk the whole chain; stop at the first record that does not hold."""
    prev, expect, count = GENESIS, 1, 0
    for rec in records(path):
        problem = None
        if rec.seq != expect:
            return Verdict(False, count, prev, expect,
                           f"record {expect} is missing (the next record is {rec.seq})")
        if rec.prev != prev:
            problem = "does not link to the record before it (prev hash differs)"
        elif record_hash(prev, rec.body) != rec.hash:
            problem = "its content was changed (hash mismatch)"
        else:
            try:
                if json.loads(rec.body).get("seq") != rec.seq:
                    problem = "its body names another position"
            except ValueError:
                problem = "its body is not JSON"
        if problem:
            return Verdict(False, count, prev, rec.seq, f"record {rec.seq} {problem}")
        prev, expect, count = rec.hash, expect + 1, count + 1
    if head is not None and head != prev:
        return Verdict(False, count, prev, expect,
                       f"the log ends at record {count} with head {prev.hex()}, not the expected head "
                       f"{head.hex()}: records were cut off the end (or the head is from another log)")
    return Verdict(True, count, prev, None, None)


def describe(rec: Record) -> str:
    """One readable line for `crumb audit tail`."""
    d = rec.data
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.get("t", 0) / 1000))
    ms = int(d.get("t", 0)) % 1000
    who = d.get("device") or "-"
    if d.get("event") == "issued":
        scopes = ", ".join(f"{r} {p if isinstance(p, str) else p}" for r, p in d.get("scope", []))
        n = len(d.get("tokens", []))
        what = f"issued {n} token{'s' if n != 1 else ''} [{scopes}] exp {d.get('exp')} kid {d.get('kid')}"
    else:
        auth = "" if d.get("auth") else " (unauthenticated)"
        what = f"REFUSED {d.get('code')}{auth}: {d.get('msg')}"
    peer = f" from {d['peer']}" if d.get("peer") else ""
    return f"#{rec.seq:<7} {stamp}.{ms:03d}Z {who}{peer}  {what}"
