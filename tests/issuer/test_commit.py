"""The audit writer that signs: native (crumb._commit, no GIL) or Python (tokens signed on the loop).

The native writer must be built in the test environment: a missing compiler
fails here, loudly, instead of quietly testing only the slower path. Tests
that matter for both writers run on both.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from crumb.issuer import audit, commit
from crumb.issuer.app import Settings, build_issuer
from crumb.issuer.audit import GENESIS, AuditLog, AuditUnavailable
from crumb.issuer.datadir import DataDir
from crumb.issuer.protocol import build_request, derive_device_key, parse_response
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.verify import Verifier

from .policies import POLICY

WRITERS = pytest.mark.parametrize("native", [True, False], ids=["native", "python"])


def test_the_native_writer_is_built():
    assert commit._native is not None, (
        "crumb._commit is not built: the issuer would sign on its event loop. Install a C compiler and the "
        "Python headers, then `make setup` (pip install -e .) again")
    assert commit.NATIVE or os.environ.get("CRUMB_NATIVE_COMMIT") == "0"


@WRITERS
def test_a_batch_signed_under_two_keys_during_a_rotation(tmp_path, monkeypatch, native):
    """Records and signatures land where they belong, whichever key signed and however they batched."""
    monkeypatch.setattr(commit, "NATIVE", native)
    old, new = SigningKey.generate(), SigningKey.generate()

    async def main() -> list:
        log = AuditLog(tmp_path / "a.db")
        log.start()
        futures = []
        for i in range(40):  # queued in one turn of the loop: a few batches, runs of keys within them
            key = old if i % 3 else new
            if i % 4 == 3:
                futures.append((None, [], log.append({"n": i, "event": "refused"})))
            else:
                msgs = [os.urandom(i * 7 % 300) for _ in range(i % 3 + 1)]
                futures.append((key, msgs, log.append_signed(b'{"n":%d}' % i, key, msgs)))
        results = [(key, msgs, await fut) for key, msgs, fut in futures]
        assert log.commits >= 1 and log.records == 40
        await log.stop()
        return results

    results = asyncio.run(main())
    seqs = []
    for key, msgs, result in results:
        if key is None:
            seqs.append(result)
            continue
        seq, sigs = result
        seqs.append(seq)
        assert sigs == [key.sign(m) for m in msgs]
    assert seqs == list(range(1, 41))
    verdict = audit.verify(tmp_path / "a.db")
    assert verdict.ok and verdict.count == 40


@WRITERS
def test_issued_tokens_verify(tmp_path, monkeypatch, native):
    monkeypatch.setattr(commit, "NATIVE", native)
    (tmp_path / "p.toml").write_text(POLICY)
    issuer = build_issuer(Settings(DataDir(tmp_path / "data"), tmp_path / "p.toml"))
    issuer.registry.add("dev-a", "sensors")
    key = derive_device_key(issuer.macs.master, "dev-a")

    async def main() -> list:
        issuer.audit.start()
        answers = await asyncio.gather(*(
            issuer.token(build_request("dev-a", key, [("/sensors/t", "read")], count=1 + i % 3), "cbor", "::1")
            for i in range(30)))
        await issuer.audit.stop()
        return answers

    answers = asyncio.run(main())
    verifier = Verifier([issuer.keyring.current.public], replay=MemoryReplayStore(fence=False))
    tokens = []
    for status, body, _ in answers:
        assert status == 200
        tokens += [t for t, _, _ in parse_response(body).tokens]
    assert len(tokens) == 60 and len(set(tokens)) == 60
    for token in tokens:
        verifier.verify(token, "/sensors/t", "read")
    verdict = audit.verify(issuer.audit.path)
    assert verdict.ok and verdict.count == 30
    issuer.registry.close()


def test_a_failed_native_commit_fails_its_requests_and_the_writer_recovers(tmp_path, monkeypatch):
    """A record appended behind the writer's back makes its next commit fail: that batch is refused, nothing
    of it is written, and the writer carries on from the true head."""
    monkeypatch.setattr(commit, "NATIVE", True)
    path = tmp_path / "a.db"

    async def main() -> None:
        log = AuditLog(path)
        log.start()
        assert await log.append({"n": 0}) == 1
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("INSERT INTO audit (seq, body, prev, hash) VALUES (2, x'7b7d', ?, ?)", (bytes(32), bytes(32)))
        other.close()
        with pytest.raises(AuditUnavailable, match="UNIQUE"):
            await log.append({"n": 1})
        assert log.failures == 1 and not log.healthy
        assert await log.append({"n": 2}) == 3  # the head was re-read: it follows the foreign record
        assert log.healthy
        await log.stop()

    asyncio.run(main())
    rows = sqlite3.connect(path).execute("SELECT seq FROM audit ORDER BY seq").fetchall()
    assert rows == [(1,), (2,), (3,)]


def test_native_writer_rejects_what_it_cannot_take(tmp_path):
    native = commit._native
    path = tmp_path / "a.db"
    AuditLog(path)  # the schema
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        addresses = commit.writer_addresses()
        with pytest.raises(ValueError, match="null function"):
            native.writer_new((0, *addresses[1:]), str(path), "FULL", efd, 0, GENESIS)
        with pytest.raises(ValueError, match="32 bytes"):
            native.writer_new(addresses, str(path), "FULL", efd, 0, GENESIS[:31])
        with pytest.raises(ValueError, match="FULL or NORMAL"):
            native.writer_new(addresses, str(path), "OFF", efd, 0, GENESIS)
        with pytest.raises(OSError, match="cannot be opened"):
            native.writer_new(addresses, str(tmp_path / "no" / "such" / "dir.db"), "FULL", efd, 0, GENESIS)
        writer = native.writer_new(addresses, str(path), "FULL", efd, 0, GENESIS)
        sk = SigningKey.generate().secret_bytes
        with pytest.raises(ValueError, match="64 bytes"):
            native.writer_submit(writer, 1, sk[:32], [b"m"], [b"{}"])
        with pytest.raises(ValueError, match="without a key"):
            native.writer_submit(writer, 1, None, [b"m"], [b"{}"])
        with pytest.raises(TypeError, match="lists of bytes"):
            native.writer_submit(writer, 1, sk, [b"m", "text"], [b"{}"])
        with pytest.raises(TypeError):
            native.writer_submit(writer, 1, sk, (b"m",), [b"{}"])
        with pytest.raises(ValueError, match="32 bytes"):
            native.writer_set_head(writer, 0, b"short")
        assert native.writer_collect(writer) == []
    finally:
        os.close(efd)


@WRITERS
def test_appends_at_shutdown_are_committed_or_refused_never_left_waiting(tmp_path, monkeypatch, native):
    monkeypatch.setattr(commit, "NATIVE", native)

    async def main() -> None:
        log = AuditLog(tmp_path / "a.db")
        log.start()
        queued = [log.append({"n": i}) for i in range(5)]  # not yet handed to the writer
        await log.stop()
        assert [await asyncio.wait_for(f, 5) for f in queued] == [1, 2, 3, 4, 5]
        with pytest.raises(AuditUnavailable, match="closed"):
            await asyncio.wait_for(log.append({"n": "late"}), 5)

    asyncio.run(main())
    assert audit.verify(tmp_path / "a.db").count == 5


@WRITERS
def test_batches_that_queue_behind_a_commit_share_the_next_one(tmp_path, monkeypatch, native):
    """Group commit: while one commit waits (here on a lock held by another connection), the batches handed
    over meanwhile all go into the next transaction, not one transaction (and one fsync) each."""
    monkeypatch.setattr(commit, "NATIVE", native)
    path = tmp_path / "a.db"
    key = SigningKey.generate()

    async def main() -> None:
        log = AuditLog(path)
        log.start()
        assert await log.append({"n": 0}) == 1
        assert log.commits == 1
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the writer's next commit waits for this
        first = log.append({"n": 1})
        await asyncio.sleep(0.3)  # handed over; the writer is now waiting on the lock
        later = []
        for i in range(2, 7):  # five more batches, one per turn of the loop
            later.append(log.append_signed(b'{"n":%d}' % i, key, [b"m%d" % i]))
            await asyncio.sleep(0.02)
        other.execute("COMMIT")
        other.close()
        assert await asyncio.wait_for(first, 10) == 2
        results = [await asyncio.wait_for(f, 10) for f in later]
        assert [seq for seq, _ in results] == [3, 4, 5, 6, 7]
        assert [sigs for _, sigs in results] == [[key.sign(b"m%d" % i)] for i in range(2, 7)]
        assert log.records == 7
        # 3: the first record, the one that waited on the lock, then all five together (2 if the writer had
        # not yet taken the waiting one when the others came: also one commit for the queue).
        assert log.commits <= 3, f"{log.commits} commits: batches queued behind a commit were committed one by one"
        await log.stop()

    asyncio.run(main())
    assert audit.verify(path).count == 7
