"""The audit writer that signs: native (crumb.issuer._native, no GIL) or Python (tokens signed on the loop).

Tests that matter for both writers run on both. The native ones are left out
only when CRUMB_NATIVE=0 turns every native path off (as when someone runs the
issuer tests that way; the Makefile's second pass leaves this file out, since
the first pass already runs both writers here); anywhere else a native writer that does not
run fails them. tools/setup_test_env.sh, which `make test` runs first, checks
it is built and says what is missing.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from crumb.issuer import _native, audit
from crumb.issuer.app import Settings, build_issuer
from crumb.issuer.audit import GENESIS, AuditLog, AuditUnavailable
from crumb.issuer.datadir import DataDir
from crumb.issuer.protocol import build_request, derive_device_key, parse_response
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.verify import Verifier

from .policies import POLICY

NATIVE_ONLY = pytest.mark.skipif(os.environ.get("CRUMB_NATIVE", "1") == "0", reason="CRUMB_NATIVE=0: Python paths only")
WRITERS = pytest.mark.parametrize("native", [pytest.param(True, marks=NATIVE_ONLY), False], ids=["native", "python"])


@WRITERS
def test_a_batch_signed_under_two_keys_during_a_rotation(tmp_path, monkeypatch, native):
    """Records and signatures land where they belong, whichever key signed and however they batched."""
    monkeypatch.setattr(_native, "NATIVE", native)
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
    monkeypatch.setattr(_native, "NATIVE", native)
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


@NATIVE_ONLY
def test_a_failed_native_commit_fails_its_requests_and_the_writer_recovers(tmp_path, monkeypatch):
    """A record appended behind the writer's back makes its next commit fail: that batch is refused, nothing
    of it is written, and the writer carries on from the true head."""
    path = tmp_path / "a.db"

    async def main() -> None:
        log = AuditLog(path)
        log.start()
        assert await log.append({"n": 0}) == 1
        other = sqlite3.connect(path, isolation_level=None)
        prev = other.execute("SELECT hash FROM audit WHERE seq = 1").fetchone()[0]
        other.execute("INSERT INTO audit (seq, body, prev, hash) VALUES (2, x'7b7d', ?, ?)",
                      (prev, audit.record_hash(prev, 2, b"{}")))
        with pytest.raises(AuditUnavailable, match="UNIQUE"):
            await log.append({"n": 1})
        assert log.failures == 1 and not log.healthy
        assert await log.append({"n": 2}) == 3  # the head was re-read: it follows the foreign record
        assert log.healthy
        # A tail that does not match its own hash is never chained on: the head is read back (and
        # checked) after every failure, and the batch is refused until the log is repaired.
        other.execute("INSERT INTO audit (seq, body, prev, hash) VALUES (4, x'7b7d', ?, ?)", (bytes(32), bytes(32)))
        with pytest.raises(AuditUnavailable, match="UNIQUE"):
            await log.append({"n": 3})
        with pytest.raises(AuditUnavailable, match="does not match its hash"):
            await log.append({"n": 4})
        other.close()
        await log.stop()

    asyncio.run(main())
    rows = sqlite3.connect(path).execute("SELECT seq FROM audit ORDER BY seq").fetchall()
    assert rows == [(1,), (2,), (3,), (4,)]


@NATIVE_ONLY
def test_native_writer_rejects_what_it_cannot_take(tmp_path):
    path = tmp_path / "a.db"
    AuditLog(path)  # the schema
    probe = str(tmp_path / "a.db.probe")
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with pytest.raises(ValueError, match="32 bytes"):
            _native.writer_new(str(path), "FULL", efd, 0, GENESIS[:31], probe)
        with pytest.raises(ValueError, match="FULL or NORMAL"):
            _native.writer_new(str(path), "OFF", efd, 0, GENESIS, probe)
        with pytest.raises(OSError, match="cannot be opened"):
            _native.writer_new(str(tmp_path / "no" / "such" / "dir.db"), "FULL", efd, 0, GENESIS, probe)
        with pytest.raises(OSError, match="probe file"):
            _native.writer_new(str(path), "FULL", efd, 0, GENESIS, str(tmp_path / "no" / "probe"))
        writer = _native.writer_new(str(path), "FULL", efd, 0, GENESIS, probe)
        sk = SigningKey.generate().secret_bytes
        with pytest.raises(ValueError, match="64 bytes"):
            _native.writer_submit(writer, 1, sk[:32], [b"m"], [b"{}"])
        with pytest.raises(ValueError, match="without a key"):
            _native.writer_submit(writer, 1, None, [b"m"], [b"{}"])
        with pytest.raises(TypeError, match="lists of bytes"):
            _native.writer_submit(writer, 1, sk, [b"m", "text"], [b"{}"])
        with pytest.raises(TypeError):
            _native.writer_submit(writer, 1, sk, (b"m",), [b"{}"])
        with pytest.raises(ValueError, match="32 bytes"):
            _native.writer_set_head(writer, 0, b"short")
        assert _native.writer_collect(writer) == []
    finally:
        os.close(efd)


@NATIVE_ONLY
def test_the_native_writer_uses_python_sqlite_library():
    """The check the loader relies on: Python's sqlite3 module and the extension resolve to one SQLite;
    anything else (no module file, a library without SQLite) is "not the same"."""
    ext = sys.modules["crumb.issuer._native._commit"]
    module_file = sqlite3.complete_statement.__self__.__file__
    same, ours, theirs = ext.same_sqlite(module_file)
    assert same and ours == theirs and "sqlite3" in ours, (ours, theirs)
    assert ext.sqlite_version() == sqlite3.sqlite_version
    assert ext.same_sqlite(None) == (False, ours, None)
    libc = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/libc.so" in line or "/libc-" in line)
    assert ext.same_sqlite(libc)[0] is False
    assert ext.same_sqlite("/no/such/file.so")[0] is False


@NATIVE_ONLY
def test_the_loader_refuses_an_extension_on_another_sqlite(monkeypatch):
    ext = sys.modules["crumb.issuer._native._commit"]
    monkeypatch.setattr(ext, "same_sqlite", lambda path: (False, "/elsewhere/libsqlite3.so.0", None))
    loaded, why = _native._load()
    assert loaded is None and "/elsewhere/libsqlite3.so.0" in why and "file locks" in why


def test_the_loader_says_why_the_native_writer_does_not_run(monkeypatch):
    """Each reason the loader refuses the extension, as `crumb issuer serve` prints it."""
    import importlib

    monkeypatch.setenv("CRUMB_NATIVE", "0")
    assert _native._load() == (None, "turned off by CRUMB_NATIVE=0")
    monkeypatch.setenv("CRUMB_NATIVE", "1")
    with monkeypatch.context() as m:
        m.setattr(sys, "platform", "darwin")
        assert _native._load()[0] is None and "needs Linux" in _native._load()[1]

    def absent(name: str):
        raise ModuleNotFoundError(name)

    def broken(name: str):
        raise ImportError("libsodium.so.23: cannot open shared object file")

    with monkeypatch.context() as m:
        m.setattr(importlib, "import_module", absent)
        assert _native._load()[0] is None and "is not built" in _native._load()[1]
        m.setattr(importlib, "import_module", broken)
        assert _native._load() == (None, ("crumb.issuer._native._commit does not load: libsodium.so.23: cannot "
                                         "open shared object file"))


@pytest.mark.parametrize("setting", ["0", "1"])
def test_crumb_native_0_turns_the_native_writer_off(setting):
    code = "from crumb.issuer import _native, audit; print(_native.NATIVE); print(_native.describe())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "CRUMB_NATIVE": setting},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    if setting == "0":
        assert out == ["False", ("Python: signing on the event loop, a Python thread commits (turned off by "
                                "CRUMB_NATIVE=0)")]
    else:  # on, unless it cannot run here (the set-up script makes sure it can); describe() agrees
        assert out[1].startswith("native: " if out[0] == "True" else "Python: ") and "CRUMB_NATIVE" not in out[1]


@WRITERS
def test_appends_at_shutdown_are_committed_or_refused_never_left_waiting(tmp_path, monkeypatch, native):
    monkeypatch.setattr(_native, "NATIVE", native)

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
    monkeypatch.setattr(_native, "NATIVE", native)
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
