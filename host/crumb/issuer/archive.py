"""Closed audit segments: export them (`crumb audit archive`) and delete the archived ones (`crumb audit prune`).

A segment is closed once a later segment of its chain holds a record: the
writer moves on only after the last record of the one before is committed,
so nothing is ever added to a closed segment again. The newest non-empty
segment (the one the issuer appends to) is never archived or pruned.

An archive is a directory laid out like a data directory's segments (the
same file names, each a standalone SQLite file), so `crumb audit verify
--data ARCHIVE` checks it offline with nothing but the archive. If the
chain's first segments were pruned before the archive was started, the
archive gets the chain's anchor too: the record its first segment follows.

Pruning deletes only a run of the oldest closed segments, each of them in
the archive with the very same records (same first and last record, same
last hash, same count), and only after writing the chain's anchor
(<chain>.anchor.json: the first segment kept, and the number and hash of
the last record deleted). `crumb audit verify` then starts the chain from
the anchor; with --archive it reads the archived segments first, so the
chain is checked from its first record and the anchor must lie on it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

from . import audit


class ArchiveError(Exception):
    pass


class Summary(NamedTuple):
    first: int           # seq of the segment's first record (0: empty)
    last: int            # seq of its last record (0: empty)
    prev: bytes          # what its first record links to
    head: bytes          # hash of its last record
    rows: int
    last_t: int | None   # the last record's time (ms), for --keep-days


def summary(path: Path) -> Summary:
    """One segment's ends, read-only (bounded: three indexed reads and a count)."""
    conn = audit.open_readonly(path)
    try:
        first = conn.execute("SELECT seq, prev FROM audit ORDER BY seq LIMIT 1").fetchone()
        last = conn.execute("SELECT seq, hash, body FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        rows = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    finally:
        conn.close()
    if first is None:
        return Summary(0, 0, audit.GENESIS, audit.GENESIS, 0, None)
    try:
        t = json.loads(last[2]).get("t")
    except (ValueError, AttributeError):
        t = None
    return Summary(first[0], last[0], bytes(first[1]), bytes(last[1]), rows, t if type(t) is int else None)


def closed_segments(chain: Path) -> list[tuple[int, Path]]:
    """The chain's segments older than its newest non-empty one, oldest first."""
    found = audit.segments(chain)
    newest = next((i for i in range(len(found) - 1, -1, -1) if summary(found[i][1]).rows), None)
    return found[:newest] if newest is not None else []


def _copy(src: Path, dest: Path) -> None:
    """A standalone copy (no WAL beside it), written under another name, synced, then renamed into place."""
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    source = audit.open_readonly(src)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)  # SQLite's online backup: a consistent copy, the WAL's pages included
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    _sync_dir(dest.parent)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive(chain: Path, dest: Path) -> dict:
    """Copy the chain's closed segments that ``dest`` lacks into it, then verify the archive on its own.

    Returns {"chain", "copied": [names], "segments", "records", "head", "ok", "reason"}.
    Raises ArchiveError if ``dest`` already holds a segment that differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    archived = dest / chain.name
    copied = []
    closed = closed_segments(chain)
    for k, path in closed:
        target = audit.segment_path(archived, k)
        if target.exists():
            if summary(target) != summary(path):
                raise ArchiveError(f"{target} is already in the archive and differs from {path}: "
                                   "the archive is from another log, or one of them was changed")
            continue
        _copy(path, target)
        copied.append(target.name)
    have = audit.segments(archived)
    if have and have[0][0] > 1 and not audit.anchor_path(archived).exists():
        anchor = audit.read_anchor(chain)
        if anchor is None or anchor[0] != have[0][0]:
            raise ArchiveError(f"the archive starts at segment {have[0][0]} of {chain.name} and nothing says "
                               "where the chain continues from (no matching anchor in the data directory)")
        _write_anchor(archived, *anchor)
    verdict = audit.verify(archived) if have else None
    out = {"chain": chain.name, "copied": copied, "segments": len(have),
           "records": verdict.count if verdict else 0, "head": verdict.head.hex() if verdict else None,
           "ok": bool(verdict and verdict.ok), "reason": verdict.reason if verdict else "nothing to archive yet"}
    if verdict and verdict.ok and closed:
        # The archive's end must be exactly where the next segment here begins: the last
        # archived segment is then complete (a closed segment never grows again).
        k_last = closed[-1][0]
        following = [p for k, p in audit.segments(chain) if k > k_last]
        nxt = next((s for s in map(summary, following) if s.rows), None)
        if nxt is not None and (nxt.first - 1, nxt.prev) != (verdict.count + verdict.first - 1, verdict.head):
            out.update(ok=False, reason=(f"the archive ends at record {verdict.count + verdict.first - 1} "
                                         f"(head {verdict.head.hex()}), but the next segment here starts at "
                                         f"record {nxt.first} linking to {nxt.prev.hex()}"))
    return out


def _write_anchor(chain: Path, k: int, seq: int, digest: bytes) -> None:
    path = audit.anchor_path(chain)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"chain": chain.name, "segment": k, "seq": seq, "hash": digest.hex(),
                   "written": int(time.time())}, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def prune(chain: Path, archive_dir: Path, *, keep: int = 0, keep_days: float = 0.0,
          now: float | None = None) -> dict:
    """Delete the oldest closed segments that the archive holds, keeping ``keep`` segments and ``keep_days``.

    A segment goes only if all of these hold: it is closed; every segment
    before it goes too (the chain here stays one run); at least ``keep``
    segments (the live one included) stay; its last record is older than
    ``keep_days`` days; and the archive, which must verify, holds the same
    segment. The anchor is written before any file is deleted.
    """
    now = time.time() if now is None else now
    archived = archive_dir / chain.name
    found = audit.segments(chain)
    closed = closed_segments(chain)
    if audit.segments(archived):
        verdict = audit.verify(archived)
        if not verdict.ok:
            raise ArchiveError(f"the archive {archive_dir} does not verify: {verdict.reason}")
    doomed: list[tuple[int, Path, Summary]] = []
    for k, path in closed:
        if len(found) - len(doomed) <= keep:
            break
        mine = summary(path)
        if keep_days and (mine.last_t is None or mine.last_t / 1000 > now - keep_days * 86400):
            break
        copy = audit.segment_path(archived, k)
        if not copy.exists() or summary(copy) != mine:
            break  # not archived (or not the same): it stays, and so does everything after it
        doomed.append((k, path, mine))
    if not doomed:
        return {"chain": chain.name, "deleted": [], "anchor": None}
    last_k, _, last = doomed[-1]
    _write_anchor(chain, last_k + 1, last.last, last.head)
    for _, path, _ in doomed:
        for suffix in ("-wal", "-shm", ""):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    _sync_dir(chain.parent)
    return {"chain": chain.name, "deleted": [p.name for _, p, _ in doomed],
            "anchor": {"segment": last_k + 1, "seq": last.last, "hash": last.head.hex()}}
