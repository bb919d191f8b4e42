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
            log._conn = conn  # the Python writer's commit, on a connection that gives up after 50 ms
            log._commit([(b'{"x":1}', asyncio.get_running_loop().create_future(), None, None)])  # direct: no wait
        finally:
            blocker.rollback()
        assert log.failures == 1 and log.last_error
        assert log._conn is None  # poisoned: the next commit opens a fresh connection
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


# -- every row accounted for (issue 16, defect 7) and every expected head's chain present (defect 8) --------


def forge(path, seq: int, body: bytes = b'{"event":"issued","device":"dev-x","t":0}') -> None:
    """A row an attacker with write access adds: hashed as if it belonged (it links to nothing)."""
    tamper(path, "INSERT INTO audit (seq, body, prev, hash) VALUES (?, ?, ?, ?)", seq, body, audit.GENESIS,
           audit.record_hash(audit.GENESIS, seq & (2**64 - 1), body))


@pytest.mark.parametrize("seq", [0, -1, -(2**63)])
def test_a_row_numbered_below_one_breaks_the_chain(tmp_path, seq):
    fill(tmp_path / "a.db", 10, 1)
    forge(tmp_path / "a.db", seq)
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == seq and "outside the chain" in v.reason
    assert v.rows == 11 and "10 more rows after it, unverified" in v.reason


def test_rows_beyond_the_end_of_the_chain_break_it(tmp_path):
    fill(tmp_path / "a.db", 10, 1)
    forge(tmp_path / "a.db", 15)  # after a gap
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == 11 and "record 11 is missing (the next record is 15)" in v.reason
    assert v.count == 10 and v.rows == 11


def test_a_row_right_after_the_head_that_does_not_link_breaks_it(tmp_path):
    fill(tmp_path / "a.db", 10, 1)
    forge(tmp_path / "a.db", 11)
    v = audit.verify(tmp_path / "a.db")
    assert not v.ok and v.broken_at == 11 and "does not link" in v.reason and v.rows == 11


def test_verify_and_tail_see_the_same_rows(tmp_path):
    """A forged row numbered 0 shows in `audit tail`: `audit verify` must fail on it, not say "chain intact"."""
    data = DataDir(tmp_path).create()
    fill(data.audit, 3, 1)
    forge(data.audit, 0)
    tail = crumb_cli("audit", "tail", "-n", "10", "--json", "--data", str(tmp_path), check=True).stdout.rstrip("\n").split("\n")
    assert len(tail) == 4 and '"device":"dev-x"' in tail[0]
    out = crumb_cli("audit", "verify", "--data", str(tmp_path))
    assert out.returncode == 1 and "BROKEN at record 0" in out.stdout and "outside the chain" in out.stdout
    assert "4 rows in all, in 1 segment" in out.stdout
    js = crumb_cli("audit", "verify", "--json", "--data", str(tmp_path))
    import json
    chain = json.loads(js.stdout)["chains"][0]
    assert js.returncode == 1 and (chain["ok"], chain["rows"], chain["records"]) == (False, 4, 0)


def test_an_earlier_head_still_verifies_after_the_log_grew(tmp_path):
    fill(tmp_path / "a.db", 5, 1)
    head = audit.verify(tmp_path / "a.db").head
    conn = audit.connect(tmp_path / "a.db")
    prev = head
    for seq in (6, 7):
        body = b'{"n":%d}' % seq
        digest = audit.record_hash(prev, seq, body)
        conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", (seq, body, prev, digest))
        prev = digest
    conn.close()
    v = audit.verify(tmp_path / "a.db", head)
    assert v.ok and v.count == 7 and v.head == prev
    assert not audit.verify(tmp_path / "a.db", bytes(32)).ok


def test_a_head_for_a_deleted_chain_is_a_failure(tmp_path):
    data = DataDir(tmp_path).create()
    fill(data.audit, 4, 1)
    fill(tmp_path / "audit-1.db", 3, 1)
    out = crumb_cli("audit", "verify", "--data", str(tmp_path), check=True).stdout
    head1 = out.split("audit-1.db: ok: 3 records in 1 segment, chain intact; head ")[1].split()[0]
    (tmp_path / "audit-1.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"audit-1.db{suffix}").unlink(missing_ok=True)
    gone = crumb_cli("audit", "verify", "--head", f"audit-1.db={head1}", "--data", str(tmp_path))
    assert gone.returncode == 1 and "audit-1.db: MISSING" in gone.stdout and head1 in gone.stdout
    assert "audit.db: ok: 4 records" in gone.stdout
    # With no chain left at all, an expected head is still a failure (exit 1), not a usage error.
    head0 = out.split("audit.db: ok: 4 records in 1 segment, chain intact; head ")[1].split()[0]
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    none = crumb_cli("audit", "verify", "--head", head0, "--data", str(tmp_path))
    assert none.returncode == 1 and "audit.db: MISSING" in none.stdout
