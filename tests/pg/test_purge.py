"""crumb.purge_spent() never forgets a use the verifier could still be asked about (issue 16, defect 2).

A verifier accepts a token until ``exp`` plus its leeway, so a spent use must be kept that long:
``purge_spent(0)`` used to delete it at ``exp``, and the token was accepted again.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from crumb import mint, to_text

from .sql import code_of

RES = "/sensors/temp01"


def verify(conn: psycopg.Connection, token: bytes) -> str:
    try:
        conn.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(token), RES))
    except psycopg.Error as e:
        conn.rollback()
        return code_of(e)
    conn.commit()
    return "ok"


def test_purging_keeps_uses_for_the_verifiers_leeway(db, connect, issuer):
    # A leeway far longer than the test takes, so the token stays acceptable however slow the machine.
    # Settings are read when a session first verifies: the new connection below sees it.
    db.psql("UPDATE crumb.settings SET value = '3600' WHERE name = 'leeway'")
    try:
        conn = connect()
        # Expired 100 s ago: within the leeway, so still accepted once.
        token = mint(issuer, sub="dev-p", scope=[(RES, "read")], ttl=60, now=int(time.time()) - 160)
        assert verify(conn, token) == "ok"
        assert verify(conn, token) == "replayed"
        db.psql("SELECT crumb.purge_spent(0)")  # asks to forget every use of an expired token
        assert verify(conn, token) == "replayed"
        assert int(db.psql("SELECT count(*) FROM crumb.spent WHERE hop = '' AND exp < "
                           "extract(epoch FROM clock_timestamp())::bigint")) >= 1
    finally:
        db.psql("UPDATE crumb.settings SET value = '5' WHERE name = 'leeway'")


@pytest.mark.parametrize("leeway", [0, 300])
def test_purging_forgets_uses_past_the_longer_of_its_argument_and_the_leeway(db, issuer, leeway):
    db.psql("DELETE FROM crumb.spent WHERE hop = 'purge-test'")
    now = int(time.time())
    db.psql(f"INSERT INTO crumb.spent (cti, hop, used, exp, tx) VALUES "
            f"('\\x01', 'purge-test', 1, {now - 1000}, pg_current_xact_id()), "
            f"('\\x02', 'purge-test', 1, {now - 100}, pg_current_xact_id())")
    db.psql(f"SELECT crumb.purge_spent({leeway})")
    left = db.psql("SELECT count(*) FROM crumb.spent WHERE hop = 'purge-test'")
    # 0 asks for less than the installed leeway (5 s): both expired longer ago than that go.
    # 300: the one expired 100 s ago stays.
    assert int(left) == (0 if leeway == 0 else 1)
    db.psql("DELETE FROM crumb.spent WHERE hop = 'purge-test'")
