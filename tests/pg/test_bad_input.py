"""Bad input: every refusal is an error with the stable code, never an allow and never a crashed backend."""

from __future__ import annotations

import random

import psycopg
import pytest

from crumb import SigningKey, mint, to_text
from crumb.token import split

from .sql import OK, code_of, insert, set_token

RES = "/sensors/temp01"


def token(issuer: SigningKey, **kw) -> bytes:
    kw.setdefault("scope", [(RES, "publish")])
    return mint(issuer, sub="dev-0001", **kw)


def flipped_signature(t: bytes) -> bytes:
    tok = split(t)
    sig = bytearray(tok.authority.signature)
    sig[0] ^= 1
    return t.replace(tok.authority.signature, bytes(sig))


@pytest.mark.parametrize(("make", "code"), [
    (lambda issuer: None, "missing_token"),
    (lambda issuer: "", "missing_token"),
    (lambda issuer: "not a token!", "malformed"),
    (lambda issuer: to_text(b"\x00" * 40), "malformed"),
    (lambda issuer: to_text(token(issuer))[:-7], "malformed"),
    (lambda issuer: token(SigningKey.generate()), "unknown_key"),
    (lambda issuer: flipped_signature(token(issuer)), "bad_signature"),
    (lambda issuer: token(issuer, ttl=1, now=1_000_000), "expired"),
    (lambda issuer: "A" * 10_000, "too_large"),
])
def test_refused_with_its_code(db, app, issuer, make, code):
    assert insert(app, make(issuer)) == code


def test_a_session_level_setting_outlives_no_transaction(db, app, issuer):
    """SET LOCAL ends with the transaction: the next one without a token is refused."""
    t = token(issuer)
    assert insert(app, t) == OK
    assert insert(app, None) == "missing_token"


def test_a_token_in_the_session_still_serves_one_transaction(db, app, issuer):
    app.execute("SELECT set_config('crumb.token', %s, false)", (to_text(token(issuer)),))  # SET, not SET LOCAL
    app.commit()
    assert insert(app, None) == OK
    assert insert(app, None) == "replayed"
    app.execute("RESET crumb.token")
    app.commit()


def test_a_read_only_transaction_cannot_spend_so_it_is_refused(db, app, issuer):
    app.execute("SET TRANSACTION READ ONLY")
    set_token(app, token(issuer, scope=[(RES, "read")]))
    with pytest.raises(psycopg.Error) as e:
        app.execute("SELECT count(*) FROM readings")
    app.rollback()
    assert e.value.sqlstate == "25006" and e.value.diag.message_detail == "store_unavailable"


def test_null_arguments_are_refusals(db, app, issuer):
    for args in ((None, RES, "read"), (to_text(token(issuer)), None, "read")):
        with pytest.raises(psycopg.Error) as e:
            app.execute("SELECT crumb.verify(%s, %s, %s)", args)
        app.rollback()
        assert code_of(e.value) in ("missing_token", "scope_denied")


def test_mangled_tokens_never_crash_the_backend(db, app, issuer):
    """500 random corruptions of a valid token: each is refused with a code, or (when the bytes
    still verify) accepted once; the same backend keeps answering throughout."""
    pid = app.info.backend_pid
    rng = random.Random(17)
    good = bytearray(token(issuer, scope=[(RES, "read")], ttl=600))
    codes: set[str] = set()
    for _ in range(500):
        bad = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            if not bad:
                break
            choice = rng.random()
            if choice < 0.5:
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            elif choice < 0.75:
                del bad[rng.randrange(len(bad)):]
            else:
                bad[rng.randrange(len(bad)):rng.randrange(len(bad))] = rng.randbytes(rng.randint(1, 300))
        try:
            app.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(bytes(bad)), RES))
            app.commit()
            codes.add("ok")
        except psycopg.Error as e:
            app.rollback()
            codes.add(code_of(e))
    assert app.info.backend_pid == pid and app.execute("SELECT 1").fetchone() == (1,)
    app.rollback()
    assert {"malformed", "bad_signature"} <= codes
    assert codes <= {"ok", "missing_token", "malformed", "bad_signature", "unknown_key", "too_large", "unsupported_version",
                     "unknown_caveat", "expired", "not_yet_valid", "scope_denied", "replayed"}
