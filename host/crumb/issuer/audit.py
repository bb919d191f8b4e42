"""The audit log: every issuance and every refusal, append-only, hash-chained, in SQLite.

Record n stores its body (canonical JSON), the hash of record n-1, and its
own hash = SHA-256(hash of record n-1 || n as 8 bytes big-endian || body). A
changed, removed, reordered or inserted record breaks the chain at that
record, and `crumb audit verify` names it; every row is accounted for (a
row numbered 0 or below, a repeat, a gap is a failure). Cutting records off
the end leaves a valid shorter chain: keep the head hash `verify` prints
somewhere else (and pass it back with --head) to catch that too.

A chain is stored in segments (see "segments" below): the writer rotates
into a new file every segment_records records, between two batches, and
the chain's numbering and hashes carry on across files. archive.py exports
closed segments and prunes archived ones.

Commit strategy: group commit. Request handlers encode their record (on the
event loop) and wait; everything appended during one turn of the event loop
goes to one writer thread as a batch, which chains it and appends it in one
transaction (WAL, synchronous=FULL: durable once committed) and only then
releases the waiting handlers. So a token is never sent before its record
is on disk, and one fsync covers every request that arrived meanwhile. If
the commit fails, or SQLite says done but commit_doubt finds the commit
cannot be trusted (a file system turning read-only can confirm an fsync it
did not keep), every waiting request fails with store_unavailable and no
token of that batch leaves the issuer; the writer is then poisoned until it
has a fresh connection and has re-read (and checked) the chain's head. Each chain has one writer: the
issuer gives each of its processes a chain of its own (DATA/audit-N.db, see
datadir.claim_audit), which it keeps the head of in memory; they never wait
on one another's write lock.

Two writers, one behaviour. With the native writer (crumb.issuer._native,
_native/commit.c: built, on Linux, the same SQLite library as Python's, and
not turned off with CRUMB_NATIVE=0), it also signs the batch's tokens
(append_signed), so a token gets its signature only as its record is
committed, and it never takes the GIL; results come back to the loop
through an eventfd. Without it, a Python thread commits (one multi-row
INSERT per batch, so it takes the GIL a few times per batch rather than
once per row) and the tokens are signed on the event loop before they are
queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from json.encoder import encode_basestring as _quote
from pathlib import Path
from typing import NamedTuple

from .. import auditchain
from ..auditchain import Record, Verdict
from ..keys import SigningKey
from . import _native

log = logging.getLogger("crumb.issuer.audit")

GENESIS = auditchain.GENESIS
HANDOFF_AT = 16
MAX_INSERT_ROWS = 1024  # rows per INSERT: 4 parameters each, well under SQLite's 32766

# The record format, its hash chain and the per-row checks are crumb.auditchain's,
# shared with the services' logs; re-exported here for the issuer's callers.
SCHEMA = auditchain.SCHEMA
record_hash = auditchain.record_hash
canonical = auditchain.canonical
_ENCODER = auditchain._ENCODER


def _q(value: str | None) -> str:
    return "null" if value is None else _quote(value)


class IssuedRecord:
    """canonical() of a one-token issuance record, from a template kept per lane (issuing.py).

    The audit record has two writers, no more: canonical() of the record's
    dict, the general one (refusals and multi-token issuances use it), and
    this fast path for the single-token request nearly every device sends,
    which writes the canonical text around exp, peer, t and the token id
    once per lane instead of sorting and encoding a dict per request. A
    differential test holds body_one to canonical() for random records
    (tests/issuer/test_differential.py).
    """

    __slots__ = ("head", "mid", "tail")

    def __init__(self, *, device: str, scope: list, count: int, kid: str, rules: list[str]) -> None:
        entries = ",".join(f"[{_quote(r)},{_quote(p) if isinstance(p, str) else _ENCODER.encode(p)}]"
                           for r, p in scope)
        self.head = f'{{"auth":true,"count":{count},"device":{_quote(device)},"event":"issued","exp":'
        self.mid = f',"kid":{_quote(kid)},"peer":'
        self.tail = f',"rules":[{",".join(_quote(r) for r in rules)}],"scope":[{entries}],"t":'

    def body_one(self, t: int, exp: int, peer: str | None, token_hex: str) -> bytes:
        """The record of one token, whose id is hex (nothing to escape)."""
        return f'{self.head}{exp}{self.mid}{_q(peer)}{self.tail}{t},"tokens":["{token_hex}"]}}'.encode()


connect = auditchain.connect


def _head(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
    """(seq, hash) of the last record of one segment, or None for an empty one.

    The record is checked against its own hash, so a writer that takes its
    head from here (at start, and after every failed commit) never chains on
    from a torn or rewritten tail: sqlite3.DatabaseError, and the batch is
    refused.
    """
    row = conn.execute("SELECT seq, body, prev, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return None
    seq, body, prev, digest = row
    body = body if isinstance(body, bytes) else str(body).encode()
    if record_hash(prev, seq, body) != digest:
        raise sqlite3.DatabaseError(f"the last record ({seq}) does not match its hash: run crumb audit verify")
    return seq, digest


# -- segments ---------------------------------------------------------------------------
#
# A chain (audit.db, audit-1.db, ...: one per writer) is stored in segments: the
# first in the chain's own file, segment k >= 2 in audit.00000k.db beside it. The
# writer appends to the newest; rotation starts the next one, whose first record
# links to the last record of the one before (seq and hash carry on), so the
# segments read in order are one chain. A segment is never renamed: a reader's
# open connection and SQLite's -wal and -shm files always belong to the file
# they were opened with.

SEGMENT_DIGITS = 6


# The check that a commit SQLite reported done was kept (commit_doubt, Probe) is
# crumb.auditchain's, shared with the services' logs.
READ_ONLY_WHY = auditchain.READ_ONLY_WHY
probe_path = auditchain.probe_path
Probe = auditchain.Probe
commit_doubt = auditchain.commit_doubt


def segment_path(chain: Path, k: int) -> Path:
    """Where segment ``k`` (from 1) of ``chain`` (the chain's first file, e.g. DATA/audit.db) lives."""
    return chain if k == 1 else chain.with_name(f"{chain.stem}.{k:0{SEGMENT_DIGITS}d}.db")


def segment_number(chain: Path, path: Path) -> int | None:
    """k if ``path`` is segment k of ``chain``, else None."""
    if path.name == chain.name:
        return 1
    rest = path.name[len(chain.stem) + 1:-3] if path.name.startswith(chain.stem + ".") and \
        path.name.endswith(".db") else ""
    return int(rest) if len(rest) == SEGMENT_DIGITS and rest.isdigit() and int(rest) >= 2 else None


def create_segment(path: Path) -> None:
    """Make a new segment file with its table, appearing at ``path`` all at once (so no reader sees it half made).

    Made under a temporary name, closed (SQLite removes the WAL on the last
    close) and renamed into place; nothing else ever opens the temporary file.
    commit.c's rotate_job does the same with the same SCHEMA.
    """
    if path.exists():
        return  # a switch that failed after the rename: the file is whole
    tmp = path.with_name(path.name + ".new")
    for suffix in ("", "-wal", "-shm", "-journal"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)  # left by a crash
    connect(tmp).close()
    os.replace(tmp, path)


def segments(chain: Path) -> list[tuple[int, Path]]:
    """The chain's segment files that exist, oldest first: [(k, path)]."""
    found = [(k, p) for p in chain.parent.glob(f"{chain.stem}.*db")
             if (k := segment_number(chain, p)) is not None and p.is_file()]
    return sorted(found)


def live_segment(chain: Path) -> tuple[int, Path]:
    """(k, path) of the segment the chain's writer appends to: the newest (the chain's own file if none)."""
    found = segments(chain)
    return found[-1] if found else (1, chain)


def chain_head(chain: Path) -> tuple[int, bytes]:
    """(seq, hash) of the chain's last record over all its segments, or (0, GENESIS) for an empty chain.

    With the segments before an anchor pruned (archive.py), an empty chain
    continues from the anchor.
    """
    for _, path in reversed(segments(chain)):
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            head = _head(conn)
        finally:
            conn.close()
        if head is not None:
            return head
    anchor = read_anchor(chain)
    return (anchor[1], anchor[2]) if anchor is not None else (0, GENESIS)


def anchor_path(chain: Path) -> Path:
    return chain.with_name(f"{chain.stem}.anchor.json")


def read_anchor(chain: Path) -> tuple[int, int, bytes] | None:
    """(first segment kept, seq, hash) of the record the chain's kept segments follow, if any were pruned.

    Written by `crumb audit prune` before it deletes a segment (archive.py).
    A malformed anchor is an error, never "no anchor": verify reports it.
    """
    path = anchor_path(chain)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        k, seq, digest = doc["segment"], doc["seq"], bytes.fromhex(doc["hash"])
        if type(k) is not int or type(seq) is not int or k < 2 or seq < 1 or len(digest) != 32:
            raise ValueError("segment >= 2, seq >= 1 and a 32-byte hash")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path.name} is not a valid anchor ({e})") from None
    return k, seq, digest


class AuditUnavailable(Exception):
    pass


def append_now(path: Path, record: dict) -> int:
    """Append ``record`` to the chain at ``path`` and commit it; returns its seq.

    For what the command line records (device enrolment, rekeying, revocation,
    deployment). The caller holds the chain's claim (DataDir.claim_audit), so
    it is the chain's only writer, as the issuer's processes are of theirs.
    """
    body = canonical(record).encode("utf-8")
    conn = connect(live_segment(path)[1])
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            seq, prev = chain_head(path)
            seq += 1
            conn.execute(_insert_sql(1), (seq, body, prev, record_hash(prev, seq, body)))
        return seq
    finally:
        conn.close()


class AuditLog:
    """The issuer's writer: ``await log.append(record)`` returns once the record is committed."""

    def __init__(self, path: Path, sync: str = "FULL", segment_records: int = 0) -> None:
        if sync.upper() not in ("FULL", "NORMAL"):
            raise ValueError("audit sync is FULL (durable at commit) or NORMAL (durable at checkpoint)")
        if segment_records < 0:
            raise ValueError("segment_records is 0 (never rotate) or more")
        self.path = path  # the chain: its first segment's file names it
        # Rotation: after segment_records records are handed to the writer, the next ones
        # go to a new segment (0: never). Counted as handed over, so a segment holds at
        # least that many records and at most one batch more (fewer if commits failed).
        self.segment_records = segment_records
        self.segment, self.segment_path = live_segment(path)
        self.rotations = 0
        self.rotation_errors = 0
        # Each rotation, from handing it to the writer until it switched (after the batches before it): bench.
        self.rotation_seconds: list[float] = []
        self._switching: tuple[int, Path, float] | None = None
        self.sync = sync.upper()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.records = 0
        self.commits = 0
        self.failures = 0
        self.last_error: str | None = None
        self.lock_fd: int | None = None
        self._head: tuple[int, bytes] | None = None  # (seq, hash) of the last record, in the writer
        self._writer = None  # the native writer, when crumb.issuer._native runs it
        self._stopping = False
        self._efd = -1
        self._signs = False
        self._probe: Probe | None = None  # the Python writer's (the native writer opens its own)
        self._conn: sqlite3.Connection | None = None  # the Python writer's connection (None: poisoned)
        self._writing = self.segment_path  # the segment the writer thread appends to (it switches it)
        conn = connect(self.segment_path, self.sync)  # create the schema now: fail at start, not per request
        try:
            row = conn.execute("SELECT min(seq), max(seq) FROM audit").fetchone()
        finally:
            conn.close()
        self._in_segment = 0 if row[0] is None else max(0, row[1] - row[0] + 1)
        self._rotate_after = segment_records

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._signs = _native.NATIVE  # the writer signs (native) or the loop signs before queuing
        if _native.NATIVE:
            self._start_native()
            return
        self._probe = Probe(probe_path(self.path))
        self._thread = threading.Thread(target=self._run, name="crumb-audit-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._handoff()  # what is queued goes first; what comes after is refused (_queue_entry)
        self._stopping = True
        if self._writer is not None:
            _native.writer_stop(self._writer)
        else:
            self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._writer is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._efd)
            self._collect()
            os.close(self._efd)
            self._writer = None

    # -- the native writer (crumb.issuer._native) ----------------------------------------

    def _start_native(self) -> None:
        assert self._loop is not None
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._writer = _native.writer_new(str(self.segment_path), self.sync, self._efd, 0, GENESIS,
                                          str(probe_path(self.path)))
        self._head_known = False  # read at the first append, as the Python writer does
        self._jobs: dict[int, list] = {}
        self._next_job = 0
        self._group = 0
        self._loop.add_reader(self._efd, self._collect)
        self._thread = threading.Thread(target=_native.writer_serve, args=(self._writer,),
                                        name="crumb-audit-writer", daemon=True)
        self._thread.start()

    def _submit(self, batch: list) -> None:
        """Runs of entries under one key (or none) become one job each, in order."""
        if not self._head_known:
            try:
                _native.writer_set_head(self._writer, *chain_head(self.path))
            except sqlite3.Error as e:  # refuse this batch; the next one tries again
                self.last_error = f"{type(e).__name__}: {e}"
                _wake([entry[1] for entry in batch], None, AuditUnavailable(f"the audit log cannot be read ({e})"))
                return
            self._head_known = True
        i = 0
        while i < len(batch):
            key = batch[i][2]
            j = i + 1
            while j < len(batch) and (batch[j][2] is None or key is None or batch[j][2] is key):
                key = key or batch[j][2]
                j += 1
            run = batch[i:j]
            messages = [m for entry in run if entry[2] is not None for m in entry[3]]
            job = self._next_job = self._next_job + 1
            try:
                _native.writer_submit(self._writer, job, key.secret_bytes if key is not None else None,
                                      messages, [entry[0] for entry in run])
            except (RuntimeError, MemoryError) as e:  # stopped meanwhile, or out of memory: refuse, never hang
                _wake([entry[1] for entry in run], None, AuditUnavailable(f"the audit log cannot commit ({e})"))
            else:
                self._jobs[job] = run
            i = j

    def _collect(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        failed = False
        for job, first, sigs, error, group in _native.writer_collect(self._writer):
            run = self._jobs.pop(job)
            if run is None:  # a rotation: the writer switched segments, or kept the old one
                if error is not None:
                    self._rotation_failed(error)
                else:
                    self._rotated()
                continue
            futures = [entry[1] for entry in run]
            if error is not None:
                failed = True
                self.failures += 1
                self.last_error = error
                _wake(futures, None, AuditUnavailable(f"the audit log cannot commit ({error})"))
                continue
            self.records += len(run)
            if group != self._group:  # jobs that queued up together share one transaction
                self._group = group
                self.commits += 1
            self.last_error = None
            results, k = [], 0
            for i, entry in enumerate(run):
                if entry[2] is None:
                    results.append(first + i if entry[3] is None else (first + i, entry[3]))
                else:
                    n = len(entry[3])
                    results.append((first + i, sigs[k:k + n]))
                    k += n
            _wake(futures, results, None)
        if failed:
            # The writer refuses jobs until it knows the chain's head again (another
            # writer may have appended): read it back, as the Python writer does.
            self._head_known = False  # re-read at the next append

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.last_error is None

    def append(self, record: dict) -> asyncio.Future:
        """Queue ``record`` (a JSON-able dict); the future gives its seq once committed."""
        return self.append_body(canonical(record).encode("utf-8"))

    def append_body(self, body: bytes) -> asyncio.Future:
        """Queue a record already in canonical form (canonical(), IssuedRecord); the future gives its seq."""
        return self._queue_entry((body, None, None, None))

    def append_signed(self, body: bytes, key: SigningKey, messages: list[bytes]) -> asyncio.Future:
        """Queue an issuance record and the signing inputs of its tokens.

        The future gives (seq, signatures) once the record is committed: the
        signatures of ``messages`` under ``key``, made by the writer (native)
        or here, on the event loop, before queuing (without it).
        """
        if self._signs:
            return self._queue_entry((body, None, key, messages))
        return self._queue_entry((body, None, None, [key.sign(m) for m in messages]))

    def _queue_entry(self, entry: tuple) -> asyncio.Future:
        assert self._loop is not None, "AuditLog.start() was not called"
        fut = self._loop.create_future()
        if self._thread is None or self._stopping:  # nothing would ever commit it
            fut.set_exception(AuditUnavailable("the audit log is closed"))
            return fut
        pending = self._pending
        if not pending:
            # Hand what this turn of the event loop appends to the writer at the end of
            # the turn, or every HANDOFF_AT records: the writer commits one part while
            # the loop works on the next, instead of the loop idling through one big
            # commit that every in-flight request waits for.
            self._loop.call_soon(self._handoff)
        pending.append((entry[0], fut, entry[2], entry[3]))
        if len(pending) >= HANDOFF_AT:
            self._handoff()
        return fut

    def _handoff(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            if self.segment_records and self._in_segment >= self._rotate_after:
                self._rotate()  # before the batch that would go past it: no segment is left empty
            if self._writer is not None:
                self._submit(batch)
            else:
                self._queue.put(batch)
            self._in_segment += len(batch)

    # -- rotation ----------------------------------------------------------------------

    def _rotate(self) -> None:
        """Start the next segment: everything handed over from now on goes there.

        The writer is told to switch, in queue order: after the batches
        handed over before, before those that come after, so no record is
        lost or written twice, and the chain's head carries over into the
        new segment. The writer thread creates the new file itself (a few
        fsyncs), so the event loop never waits for it; commits pause while it
        does, once per segment. If the file cannot be made (disk full), the
        writer keeps the current segment and rotation is tried again after
        another tenth of a segment.
        """
        if self._switching is not None:
            return
        k = self.segment + 1  # this process is the chain's only writer (datadir.claim_audit)
        path = segment_path(self.path, k)
        self._switching = (k, path, time.perf_counter())
        if self._writer is not None:
            job = self._next_job = self._next_job + 1
            try:
                _native.writer_rotate(self._writer, job, str(path), SCHEMA)
            except RuntimeError as e:  # stopped meanwhile
                self._rotation_failed(str(e))
                return
            self._jobs[job] = None
        else:
            self._queue.put(_Rotate(path))
        self._in_segment = 0
        self._rotate_after = self.segment_records

    def _rotated(self) -> None:
        """The writer switched (on the loop)."""
        if self._switching is None:
            return
        k, path, started = self._switching
        self._switching = None
        self.segment, self.segment_path = k, path
        self.rotations += 1
        self.rotation_seconds.append(time.perf_counter() - started)

    def _rotation_failed(self, error: str) -> None:
        self._switching = None  # the same segment number is tried again
        self.rotation_errors += 1
        self._rotate_after = self._in_segment + max(1, self.segment_records // 10)
        log.error("audit log rotation failed, the current segment carries on: %s", error)

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self._writing = self.segment_path
        try:
            self._conn = connect(self._writing, self.sync)
        except sqlite3.Error as e:  # poisoned from the start: the first batch tries again, and is refused if it fails
            self._conn = None
            self.last_error = f"{type(e).__name__}: {e}"
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            item = get()
            if item is None:
                break
            if isinstance(item, _Rotate):
                self._switch(item.path)
                continue
            batch, rotate = item, None
            while len(batch) < MAX_INSERT_ROWS:  # and whatever queued up during the last commit
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                if isinstance(item, _Rotate):  # what came before it goes to the current segment
                    rotate = item
                    break
                batch.extend(item)
            for i in range(0, len(batch), MAX_INSERT_ROWS):
                self._commit(batch[i:i + MAX_INSERT_ROWS])
            if rotate is not None:
                self._switch(rotate.path)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _switch(self, path: Path) -> None:
        """The writer moves to the segment at ``path``, creating it; the chain's head (self._head) carries over."""
        loop = self._loop
        try:
            create_segment(path)
            new = connect(path, self.sync)
        except (sqlite3.Error, OSError) as e:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._rotation_failed, f"{type(e).__name__}: {e}")
            return
        if self._conn is not None:  # None: poisoned by a failed commit and not reopened yet
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the closed segment in one file, if no reader holds it
            except sqlite3.Error:
                pass  # its WAL stays beside it: still a complete database, as SQLite reads it
            self._conn.close()
        self._conn, self._writing = new, path
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._rotated)

    def _commit(self, batch: list) -> None:
        """Sign (if asked), chain and insert ``batch``: entries (body, future, key or None, messages or sigs)."""
        futures = [entry[1] for entry in batch]
        try:
            # Poisoned by a failed commit: a fresh connection to the segment, so nothing of
            # the failed transaction's state (cache, WAL index as it saw it) carries over.
            if self._conn is None:
                self._conn = connect(self._writing, self.sync)
            conn = self._conn
            # A chain has one writer (datadir.claim_audit), so its head is read once and
            # then kept here. Were another writer to append anyway, the seq primary key
            # makes this insert fail rather than fork the chain, and the head is re-read
            # (the last record checked against its hash, _head) after every failure.
            if self._head is None:
                self._head = chain_head(self.path)
            last, prev = self._head
            first = last + 1
            params: list = []
            seq = first
            sha256 = hashlib.sha256
            for entry in batch:
                body = entry[0]
                digest = sha256(prev + seq.to_bytes(8, "big") + body).digest()
                params += (seq, body, prev, digest)
                prev = digest
                seq += 1
            # One multi-row INSERT in autocommit: one atomic transaction, one SQLite call,
            # so the writer takes the GIL a handful of times per batch, not once per row.
            n = len(batch)
            conn.execute(_insert_sql(n), params)
            assert self._probe is not None
            doubt = commit_doubt(self._writing, self._probe)
            if doubt is not None:
                raise sqlite3.OperationalError(doubt)
        except Exception as e:  # noqa: BLE001 -- disk full, locked too long, I/O error: nobody gets a token
            # Poisoned: nothing more is committed on this connection, and the head is read
            # back from the file (the record of a failed commit may be there or not).
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
                self._conn = None
            self._head = None
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self._settle(futures, None, AuditUnavailable(f"the audit log cannot commit ({e})"))
            return
        self._head = (seq - 1, prev)
        self.records += n
        self.commits += 1
        self.last_error = None
        # Entries carry no key here: without the native writer, tokens are signed before queuing.
        results = [first + i if entry[3] is None else (first + i, entry[3]) for i, entry in enumerate(batch)]
        self._settle(futures, results, None)

    def _settle(self, futures: list, seqs: list | None, error: Exception | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_wake, futures, seqs, error)
        except RuntimeError:  # the loop closed between the check and the call
            pass


class _Rotate(NamedTuple):
    """In the Python writer's queue: switch to the segment at path after what was queued before."""
    path: Path


_INSERTS: dict[int, str] = {}


def _insert_sql(rows: int) -> str:
    sql = _INSERTS.get(rows)
    if sql is None:
        sql = _INSERTS[rows] = "INSERT INTO audit (seq, body, prev, hash) VALUES " + ",".join(["(?,?,?,?)"] * rows)
    return sql


def _wake(futures: list, results: list | None, error: Exception | None) -> None:
    for i, fut in enumerate(futures):
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(results[i])  # type: ignore[index]


# -- reading and verifying -----------------------------------------------------------


def open_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no audit log at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    return conn


_ROWS = "SELECT seq, body, prev, hash FROM audit"


def _segment_records(path: Path, after: int | None = None) -> Iterator[Record]:
    conn = open_readonly(path)
    try:
        rows = conn.execute(_ROWS + " ORDER BY seq") if after is None else \
            conn.execute(_ROWS + " WHERE seq > ? ORDER BY seq", (after,))
        for row in rows:
            yield Record(*row)
    finally:
        conn.close()


def records(path: Path, after: int | None = None) -> Iterator[Record]:
    """Every row of the chain's segments, segment by segment in seq order (those after seq ``after``, if given).

    No row is filtered out by default: a row numbered 0 or below is not part
    of any chain, and verify() must see it to say so, as `audit tail` shows it.
    """
    found = segments(path)
    if not found:
        raise FileNotFoundError(f"no audit log at {path}")
    for _, segment in found:
        yield from _segment_records(segment, after)


def last(path: Path, n: int) -> list[Record]:
    """The chain's last ``n`` rows (by segment, then seq), oldest first."""
    out: list[Record] = []
    found = segments(path)
    if not found:
        raise FileNotFoundError(f"no audit log at {path}")
    for _, segment in reversed(found):
        conn = open_readonly(segment)
        try:
            rows = conn.execute(_ROWS + " ORDER BY seq DESC LIMIT ?", (n - len(out),)).fetchall()
        finally:
            conn.close()
        out += [Record(*row) for row in rows]
        if len(out) >= n:
            break
    return list(reversed(out))


def _start(path: Path, found: list[tuple[int, Path]]) -> tuple[int, bytes, int | None, str | None]:
    """(first seq, the hash it links to, the segment an anchor is checked at, problem) for the segments found."""
    k0 = found[0][0]
    try:
        anchor = read_anchor(path)
    except ValueError as e:
        return 1, GENESIS, None, str(e)
    if k0 == 1:  # the whole chain is here: it starts at the genesis; an anchor, if any, is a point on it
        return 1, GENESIS, anchor[0] if anchor else None, None
    if anchor is None:
        return 1, GENESIS, None, (f"segments 1 to {k0 - 1} of {path.name} are not here and no anchor "
                                  f"({anchor_path(path).name}) says where the chain continues")
    k, seq, digest = anchor
    if k > k0:
        # Pruning stopped half-way: read on from the oldest segment left, and check the anchor on the way.
        return 0, GENESIS, k, None
    if k < k0:
        return 1, GENESIS, None, (f"the anchor says the chain continues in segment {k}, but the oldest segment "
                                  f"here is {k0}: segments {k} to {k0 - 1} are missing")
    return seq + 1, digest, None, None


def verify(path: Path, head: bytes | None = None, archive: Path | None = None) -> Verdict:
    """Walk the whole chain, segment by segment; the first row that does not hold breaks it.

    Every row is accounted for: a chain is records 1, 2, 3, ... each linking
    to the one before, across segments, so a row numbered 0 or below, a gap,
    a record number seen twice, or a row after a break is a failure, and the
    rows after the first problem are counted as unverified rather than
    ignored. With older segments pruned the chain starts from its anchor
    (``<chain>.anchor.json``); with ``archive`` (a directory `crumb audit
    archive` wrote) the archived segments come first, so the chain is checked
    from its first record. ``head``, a hash an earlier verify printed, must be
    the hash of one of the records read (the chain may have grown since).
    """
    found = segments(path)
    if archive is not None:
        archived = archive / path.name
        k0 = found[0][0] if found else 1 << 62
        found = [(k, p) for k, p in segments(archived) if k < k0] + found
        if found and found[0][0] > 1:
            path = archived if segments(archived) else path  # whose anchor says where the chain starts
    if not found:
        raise FileNotFoundError(f"no audit log at {path}")
    expect, prev, check_at, problem = _start(path, found)
    first = expect
    if problem is not None:
        return Verdict(False, 0, prev, None, problem, 0, 0, first)
    count, rows = 0, 0
    found_head = head is None
    broken: tuple[int, str] | None = None
    k_before = found[0][0] - 1
    for k, segment in found:
        if broken is None and k != k_before + 1:
            broken = (expect, f"segment {k_before + 1} of {path.name} is missing (the next one is {k})")
        k_before = k
        if broken is None and k == check_at:
            anchor = read_anchor(path)
            assert anchor is not None
            if expect == 0:  # nothing before it: the anchor starts the chain
                expect, prev, first = anchor[1] + 1, anchor[2], anchor[1] + 1
            elif (expect - 1, prev) != (anchor[1], anchor[2]):
                broken = (expect, (f"segment {k} does not follow the anchor: the chain before it ends at record "
                                   f"{expect - 1} with head {prev.hex()}, the anchor says record {anchor[1]} with "
                                   f"head {anchor[2].hex()}"))
        for rec in _segment_records(segment):
            rows += 1
            if broken is not None:
                continue  # counted, not verified: the chain is already broken before it
            if expect == 0:  # the oldest segment left by a pruning that stopped half-way: it starts the chain here
                expect, prev, first = rec.seq, rec.prev, rec.seq
            broken = auditchain.row_problem(rec, expect, prev, segment.name)
            if broken is not None:
                continue
            prev, expect, count = rec.hash, expect + 1, count + 1
            if not found_head and prev == head:
                found_head = True
    if broken is not None:
        at, reason = broken
        after = rows - count - 1
        if after > 0:
            reason += f"; {after} more row{'s' if after != 1 else ''} after it, unverified"
        return Verdict(False, count, prev, at, reason, rows, len(found), first)
    if not found_head:
        assert head is not None
        return Verdict(False, count, prev, expect,
                       f"the expected head {head.hex()} is not the hash of any record read here (records "
                       f"{first} to {expect - 1}, head {prev.hex()}): records were cut off the end or rewritten, "
                       "the head is from another log, or it is in an archived segment (pass --archive)",
                       rows, len(found), first)
    return Verdict(True, count, prev, None, None, rows, len(found), first)


def _printable(text: object) -> str:
    # One record, one line: control characters and line separators are shown escaped.
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def describe(rec: Record) -> str:
    """One readable line for `crumb audit tail`."""
    d = rec.data
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.get("t", 0) / 1000))
    ms = int(d.get("t", 0)) % 1000
    who = d.get("device") or "-"
    if d.get("event") == "issued":
        scopes = ", ".join(f"{r} {','.join(p) if isinstance(p, list) else p}" for r, p in d.get("scope", []))
        n = len(d.get("tokens", []))
        what = f"issued {n} token{'s' if n != 1 else ''} [{scopes}] exp {d.get('exp')} kid {d.get('kid')}"
    elif d.get("event") == "refused":
        auth = "" if d.get("auth") else " (unauthenticated)"
        what = f"REFUSED {d.get('code')}{auth}: {d.get('msg')}"
    else:  # the command line's lifecycle events (crumb.issuer.devices)
        details = " ".join(f"{k}={d[k]}" for k in sorted(d) if k not in ("t", "event", "device", "peer"))
        what = f"{d.get('event')}{' ' + details if details else ''}"
    peer = f" from {d['peer']}" if d.get("peer") else ""
    return _printable(f"#{rec.seq:<7} {stamp}.{ms:03d}Z {who}{peer}  {what}")
