"""How the tests talk to the database: as an application would, with psycopg."""

from __future__ import annotations

import psycopg

from crumb import to_text

OK = "ok"


def code_of(e: psycopg.Error) -> str:
    """The stable code of a crumb refusal (SQLSTATE 42501, code in DETAIL); other errors fail the test."""
    assert e.sqlstate == "42501", f"{e.sqlstate}: {e}"
    assert e.diag.message_detail, f"a refusal without a code: {e}"
    assert f"crumb: {e.diag.message_detail}: " in e.diag.message_primary, e.diag.message_primary
    return e.diag.message_detail


def set_token(conn: psycopg.Connection, token: bytes | str | None) -> None:
    """SET LOCAL crumb.token, as a bound parameter (set_config(..., true) is SET LOCAL)."""
    if token is not None:
        conn.execute("SELECT set_config('crumb.token', %s, true)",
                     (token if isinstance(token, str) else to_text(token),))


def insert(conn: psycopg.Connection, token: bytes | str | None, sensor: str = "temp01", value: float = 21.5,
           *, commit: bool = True) -> str:
    """One transaction: the token, one reading. "ok" (committed, or left open with commit=False) or the code."""
    try:
        set_token(conn, token)
        conn.execute("INSERT INTO readings (sensor, value) VALUES (%s, %s)", (sensor, value))
    except psycopg.Error as e:
        conn.rollback()
        if e.sqlstate == "42501" and not e.diag.message_detail:
            return "rls_refused"  # the policy answered false: PostgreSQL's own refusal, no crumb code
        return code_of(e)
    if commit:
        conn.commit()
    return OK
