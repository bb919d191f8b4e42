"""Single use under concurrency: two real connections present the same single-use token.

The use is a row under crumb.spent's primary key, written in the transaction
that uses the token: the second transaction waits on the first, then finds
the use spent (the first committed) or free (the first rolled back).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from crumb import mint

from .sql import OK, insert, set_token

RES = "/sensors/temp01"


def waiting_on_a_lock(db, pid: int, timeout: float = 30.0) -> bool:
    """Whether backend ``pid`` is (or within ``timeout`` comes to be) blocked on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.psql(f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {pid}").strip() == "Lock":
            return True
        time.sleep(0.02)
    return False


def second_waits_for_first(db, connect, issuer, first_ends: str) -> tuple[str, str, int]:
    a, b = connect(), connect()
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    before = int(db.psql("SELECT count(*) FROM readings"))
    assert insert(a, token, value=1, commit=False) == OK  # a holds the use, uncommitted
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(insert, b, token, value=2)
        assert waiting_on_a_lock(db, b.info.backend_pid), "the second transaction did not wait for the first"
        assert not second.done()
        getattr(a, first_ends)()
        outcome = second.result(timeout=60)
    return first_ends, outcome, int(db.psql("SELECT count(*) FROM readings")) - before


def test_first_commits_so_the_second_is_refused(db, connect, issuer):
    assert second_waits_for_first(db, connect, issuer, "commit") == ("commit", "replayed", 1)


def test_first_rolls_back_so_the_second_commits(db, connect, issuer):
    assert second_waits_for_first(db, connect, issuer, "rollback") == ("rollback", OK, 1)


def test_racing_pairs_exactly_one_commits_per_token(db, connect, issuer):
    """20 tokens, each presented by two connections released together: 20 commits, 20 refusals."""
    tokens = [mint(issuer, sub="dev-0001", scope=[(RES, "publish")]) for _ in range(20)]
    conns = [connect(), connect()]
    before = int(db.psql("SELECT count(*) FROM readings"))
    outcomes: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        for token in tokens:
            start.wait(timeout=60)
            outcomes[i].append(insert(conns[i], token, value=i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    per_token = [sorted(pair) for pair in zip(*outcomes, strict=True)]
    assert per_token == [[OK, "replayed"]] * len(tokens)
    assert int(db.psql("SELECT count(*) FROM readings")) - before == len(tokens)


def test_under_repeatable_read_the_second_fails_to_serialize(db, connect, issuer):
    """Stricter isolation: the second transaction cannot see the first's use, so it fails with a
    serialization error (SQLSTATE kept, code store_unavailable): a refusal the application may retry."""
    a, b = connect(), connect()
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    b.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    b.execute("SELECT 1")  # b's snapshot is taken before a commits
    assert insert(a, token, value=1) == OK
    try:
        set_token(b, token)
        b.execute("INSERT INTO readings (sensor, value) VALUES ('temp01', 2)")
        outcome = "committed"
    except psycopg.Error as e:
        outcome = (e.sqlstate, e.diag.message_detail)
    b.rollback()
    assert outcome == ("40001", "store_unavailable")


def test_a_lock_timeout_while_waiting_is_a_refusal_with_its_own_sqlstate(db, connect, issuer):
    a, b = connect(), connect()
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    assert insert(a, token, value=1, commit=False) == OK
    b.execute("SET LOCAL lock_timeout = '200ms'")
    with pytest.raises(psycopg.Error) as e:
        set_token(b, token)
        b.execute("INSERT INTO readings (sensor, value) VALUES ('temp01', 2)")
    b.rollback()
    a.rollback()
    assert (e.value.sqlstate, e.value.diag.message_detail) == ("55P03", "store_unavailable")
