"""The audit log: group commit, the hash chain, and what verify says when it is broken."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from crumb.issuer import audit
from crumb.issuer.app import Settings, build_issuer
from crumb.issuer.audit import AuditLog, AuditUnavailable
from crumb.issuer.datadir import DataDir
from crumb.issuer.protocol import build_request, derive_device_key, parse_response

from .conftest import crumb_cli
from .policies import POLICY


def fill(path, n: int = 50, concurrency: int = 16) -> list[int]:
    async def main() -> list[int]:
        log = AuditLog(path)
        log.start()
        seqs: list[int] = []

        async def writer(k: int) -> None:
            for i in range(k, n, concurrency):
                seqs.append(await log.append({"t": i, "event": "refused", "who": k, "msg": "é\u2028x"}))

        await asyncio.gather(*(writer(k) for k in range(concurrency)))
        await log.stop()
        if concurrency > 1:
            assert log.commits < log.records  # grouped: fewer commits than records
        return seqs

    return asyncio.run(main())


def tamper(path, sql: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_update")  # what an attacker with file access can do
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_group_commit_gives_every_record_a_place_in_one_chain(tmp_path):
    seqs = fill(tmp_path / "a.db", 200)
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    v = audit.verify(tmp_path / "a.db")
    assert v.ok and v.count == len(seqs)
    assert audit.verify(tmp_path / "a.db", v.head).ok


def test_the_log_is_append_only(tmp_path):
    fill(tmp_path / "a.db", 5, 1)
    conn = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET body = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 1")


def test_verify_names_a_changed_record(tmp_path):
    fill(tmp_path / "a.db", 30, 1)
    tamper(tmp_path / "a.db", "UPDATE audit SET body = replace(body, 'refused', 'issued') WHERE seq = 17")
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == 17 and "content was changed" in v.reason and v.count == 16


def test_verify_names_a_removed_record(tmp_path):
    fill(tmp_path / "a.db", 30, 1)
    tamper(tmp_path / "a.db", "DELETE FROM audit WHERE seq = 9")
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == 9 and "missing" in v.reason


def test_verify_names_a_relinked_record(tmp_path):
    fill(tmp_path / "a.db", 10, 1)
    # Rewrite record 4 and fix up its own hash: the next record no longer links to it.
    conn = sqlite3.connect(tmp_path / "a.db")
    prev, = conn.execute("SELECT prev FROM audit WHERE seq = 4").fetchone()
    conn.close()
    body = b'{"event":"issued"}'
    tamper(tmp_path / "a.db", "UPDATE audit SET body = ?, hash = ? WHERE seq = 4", body,
           audit.record_hash(prev, 4, body))
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == 5 and "does not link" in v.reason


def test_records_cut_off_the_end_are_caught_with_the_head(tmp_path):
    fill(tmp_path / "a.db", 10, 1)
    head = audit.verify(tmp_path / "a.db").head
    tamper(tmp_path / "a.db", "DELETE FROM audit WHERE seq >= 9")
    assert audit.verify(tmp_path / "a.db").ok  # a shorter chain is still a chain...
    v = audit.verify(tmp_path / "a.db", head)   # ...but not the one we saw
    assert not v.ok and "cut off" in v.reason


def test_audit_verify_and_tail_commands(tmp_path):
    data = DataDir(tmp_path).create()
    fill(data.audit, 12, 1)
    ok = crumb_cli("audit", "verify", "--data", str(tmp_path))
    assert ok.returncode == 0 and "audit.db: ok: 12 records" in ok.stdout
    head = ok.stdout.split("head ")[1].strip()
    tail = crumb_cli("audit", "tail", "-n", "3", "--data", str(tmp_path), check=True).stdout.splitlines()
    assert len(tail) == 3 and tail[0].startswith("#10") and "REFUSED" in tail[0]
    tamper(data.audit, "UPDATE audit SET body = 'x' WHERE seq = 3")
    bad = crumb_cli("audit", "verify", "--data", str(tmp_path))
    assert bad.returncode == 1 and "BROKEN at record 3" in bad.stdout
    assert crumb_cli("audit", "verify", "--head", head, "--data", str(tmp_path)).returncode == 1


def test_a_failing_commit_fails_every_waiting_request(tmp_path):
    path = tmp_path / "a.db"
    fill(path, 2, 1)

    async def main() -> None:
        log = AuditLog(path)
        log.start()
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        try:
            conn = audit.connect(path)
            conn.execute("PRAGMA busy_timeout = 50")
            log._commit(conn, [(b'{"x":1}', asyncio.get_running_loop().create_future(), None, None)])  # direct: no wait
        finally:
            blocker.rollback()
        assert log.failures == 1 and log.last_error
        await log.stop()

    asyncio.run(main())


def test_issuer_sends_no_token_it_could_not_log(tmp_path):
    """If the audit commit fails, the tokens are dropped and the answer is store_unavailable."""
    (tmp_path / "p.toml").write_text(POLICY)
    settings = Settings(DataDir(tmp_path / "data"), tmp_path / "p.toml")
    issuer = build_issuer(settings)
    issuer.registry.add("dev-a", "sensors")
    key = derive_device_key(issuer.macs.master, "dev-a")

    async def main() -> None:
        def broken(body):
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(AuditUnavailable("disk full"))
            return fut

        issuer.audit.append_body = broken
        issuer.audit.append_signed = lambda body, key, messages: broken(body)
        issuer.audit.append = lambda record: broken(None)
        status, body, retry = await issuer.token(build_request("dev-a", key, [("/sensors/t", "read")]),
                                                 "cbor", "127.0.0.1")
        resp = parse_response(body)
        assert (status, resp.code, resp.tokens, retry) == (503, "store_unavailable", [], 1)

    asyncio.run(main())
    issuer.registry.close()


def test_a_second_writer_cannot_fork_the_chain(tmp_path):
    """Misconfigured, two writers on one chain: an append fails rather than fork it, then recovers."""
    path = tmp_path / "a.db"

    async def main() -> None:
        a, b = AuditLog(path), AuditLog(path)
        a.start()
        b.start()
        for i in range(3):
            await a.append({"n": i})
        await b.append({"n": "b1"})
        await b.append({"n": "b2"})
        with pytest.raises(AuditUnavailable):
            await a.append({"n": "stale head"})  # a still believes the head is record 3
        assert await a.append({"n": "after"}) == 6
        await a.stop()
        await b.stop()

    asyncio.run(main())
    v = audit.verify(path)
    assert v.ok and v.count == 6
