"""Row-level security with crumb.allows(), on a real PostgreSQL, as the application role."""

from __future__ import annotations

import psycopg
import pytest

from crumb import mint, to_text

from .sql import OK, code_of, insert, set_token

RES = "/sensors/temp01"


def count(db, sensor: str = "temp01") -> int:
    return int(db.psql(f"SELECT count(*) FROM readings WHERE sensor = '{sensor}'"))


def test_the_bar(db, app, issuer):
    """No token: refused. A valid token: accepted. The same single-use token in a second
    transaction: refused. A token whose first transaction rolled back: accepted."""
    before = count(db)
    assert insert(app, None) == "missing_token"
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    assert insert(app, token) == OK
    assert insert(app, token) == "replayed"
    assert count(db) == before + 1

    other = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    assert insert(app, other, commit=False) == OK
    app.rollback()  # the row and the use go together
    assert count(db) == before + 1
    assert insert(app, other) == OK
    assert insert(app, other) == "replayed"
    assert count(db) == before + 2


def test_one_token_covers_many_rows_in_its_transaction(db, app, issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    before = count(db)
    set_token(app, token)
    for i in range(50):
        app.execute("INSERT INTO readings (sensor, value) VALUES ('temp01', %s)", (i,))
    app.commit()
    assert count(db) == before + 50
    assert insert(app, token) == "replayed"  # one use, spent by the whole transaction


def test_a_row_outside_the_scope_is_refused_by_the_policy(db, app, issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    assert insert(app, token, sensor="temp02") == "rls_refused"
    # Refused rows spend nothing: the token still works for its own sensor.
    assert insert(app, token) == OK


def test_a_savepoint_rolled_back_takes_the_use_back_and_the_next_row_spends_it_again(db, app, issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    set_token(app, token)
    app.execute("SAVEPOINT a")
    app.execute("INSERT INTO readings (sensor, value) VALUES ('temp01', 1)")
    app.execute("ROLLBACK TO SAVEPOINT a")
    # The use went with the savepoint; the cached verification must not let this row in unrecorded.
    app.execute("INSERT INTO readings (sensor, value) VALUES ('temp01', 2)")
    app.commit()
    assert insert(app, token) == "replayed"


def test_select_shows_only_the_rows_the_token_covers(db, app, issuer):
    for sensor in ("temp01", "temp02", "temp02"):
        assert insert(app, mint(issuer, sub="dev-0001", scope=[(f"/sensors/{sensor}", "publish")]), sensor) == OK
    set_token(app, mint(issuer, sub="dev-0001", scope=[("/sensors/temp02", "read")]))
    sensors = {r[0] for r in app.execute("SELECT sensor FROM readings")}
    app.commit()
    assert sensors == {"temp02"}
    # Without a token the statement fails: it never falls back to showing, or to showing nothing silently.
    with pytest.raises(psycopg.Error) as e:
        app.execute("SELECT count(*) FROM readings")
    app.rollback()
    assert code_of(e.value) == "missing_token"


def test_a_token_with_three_uses_serves_three_transactions(db, app, issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, "publish")], uses=3)
    assert [insert(app, token) for _ in range(4)] == [OK, OK, OK, "replayed"]


def test_crumb_verify_returns_the_claims_and_spends_a_use(db, app, issuer):
    token = mint(issuer, sub="dev-0042", scope=[(RES, "read")])
    claims = app.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(token), RES)).fetchone()[0]
    app.commit()
    assert claims["sub"] == "dev-0042" and claims["scope"] == [[RES, "read"]] and claims["uses"] == 1
    with pytest.raises(psycopg.Error) as e:
        app.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(token), RES))
    app.rollback()
    assert code_of(e.value) == "replayed"
    with pytest.raises(psycopg.Error) as e:
        app.execute("SELECT crumb.verify(%s, %s, 'write')", (to_text(mint(issuer, scope=[(RES, "read")])), RES))
    app.rollback()
    assert code_of(e.value) == "scope_denied"


def test_the_application_cannot_touch_crumbs_tables(db, app):
    for sql in ("DELETE FROM crumb.spent", "UPDATE crumb.settings SET value = '/tmp' WHERE name = 'python_path'",
                ("INSERT INTO crumb.keys (kid, role, public_key, status, source) VALUES "
                "('\\x00000000', 'issuer', decode(repeat('00', 32), 'hex'), 'trusted', 'x')"),
                "SELECT * FROM crumb.keys", "SELECT crumb._boot()"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(sql)
        app.rollback()
