"""`crumb pg install` and `crumb pg keys sync|add|list`, through the command line, against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from crumb import SigningKey, mint, to_text
from crumb.claims import Claims
from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import Keyring
from crumb.services.pg.keys import add
from crumb.token import split, to_bytes
from crumb.tooling.localissuer import LocalIssuer

from .sql import OK, code_of, insert

RES = "/sensors/temp01"


def crumb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True,
                          timeout=120)


@pytest.fixture
def fresh(pg, request):
    """An empty database of its own."""
    name = "t_" + request.node.name.lower()[:40]
    pg.psql(f'CREATE DATABASE "{name}"')
    yield pg.dsn(dbname=name)
    pg.psql(f'DROP DATABASE "{name}" WITH (FORCE)')


def path_args(pg, **kw) -> list[str]:
    """--python-path options when the server cannot read this checkout (see PostgresServer.python_path)."""
    return [arg for entry in pg.python_path(**kw) or () for arg in ("--python-path", entry)]


def test_install_twice_keeps_keys_and_spent_uses(pg, fresh, issuer):
    first = crumb("pg", "install", "--dsn", fresh, *path_args(pg))
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}" and report["trusted_keys"] == 0
    assert report["backend_imports"].endswith("crumb/__init__.py")
    assert report["python_path"] == (pg.python_path() or report["python_path"])
    assert crumb("pg", "keys", "add", "--dsn", fresh, "--pub", _pub(pg, issuer)).returncode == 0
    with psycopg.connect(fresh) as conn:
        conn.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(t := mint(issuer, scope=[(RES, "read")])), RES))
    again = crumb("pg", "install", "--dsn", fresh, "--leeway", "10", *path_args(pg))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["trusted_keys"] == 1 and json.loads(again.stdout)["leeway"] == 10
    with psycopg.connect(fresh) as conn, pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(t), RES))
    assert code_of(e.value) == "replayed"


def test_a_copy_of_the_packages_where_the_server_can_read_them_works(pg, fresh):
    """What the suite falls back to when the server's user cannot read the checkout."""
    run = crumb("pg", "install", "--dsn", fresh, *path_args(pg, stage=True))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["backend_imports"].startswith(pg.socket_dir + "/python/crumb/")


def test_an_install_the_server_cannot_load_changes_nothing(fresh):
    run = crumb("pg", "install", "--dsn", fresh, "--python-path", "/nonexistent")
    assert run.returncode == 1 and "No module named 'crumb'" in run.stderr, run.stderr
    with psycopg.connect(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'crumb'").fetchone() == (0,)


def test_install_needs_a_dsn():
    run = crumb("pg", "install")
    assert run.returncode == 2 and "--dsn" in run.stderr


def _pub(pg, key) -> str:
    from pathlib import Path

    from crumb.keys import save

    path = Path(pg.socket_dir).parent / f"crumb-test-{key.kid.hex()}.key"
    save(key, path)
    return f"{path}.pub"


def _published(url: str, kid: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the issuer notices a rotation within a second
        if kid.hex() in httpx.get(f"{url}/keys").text:
            return
        time.sleep(0.1)
    raise AssertionError(f"the issuer does not publish {kid.hex()}")


def test_keys_sync_follows_rotation_and_keeps_the_previous_key(db, tmp_path):
    data = tmp_path / "issuer"
    with LocalIssuer(data) as issuer:
        ring = Keyring.open(DataDir(data).keys)
        first = ring.current
        sync = crumb("pg", "keys", "sync", "--dsn", db.dsn(), "--issuer", issuer.url)
        assert sync.returncode == 0, sync.stderr
        assert json.loads(sync.stdout)["issuer"] == [first.kid.hex()]

        def verdict(key) -> str:
            with psycopg.connect(db.dsn("app")) as conn:
                try:
                    conn.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(mint(key, scope=[(RES, "read")])), RES))
                    return "ok"
                except psycopg.Error as e:
                    return code_of(e)

        assert verdict(first) == "ok"
        second = ring.rotate()
        _published(issuer.url, second.kid)
        sync = crumb("pg", "keys", "sync", "--dsn", db.dsn(), "--issuer", issuer.url)
        assert sorted(json.loads(sync.stdout)["issuer"]) == sorted([first.kid.hex(), second.kid.hex()])
        assert verdict(first) == "ok" and verdict(second) == "ok"  # the rotated key is kept

        third = ring.rotate()
        _published(issuer.url, third.kid)
        sync = crumb("pg", "keys", "sync", "--dsn", db.dsn(), "--issuer", issuer.url)
        assert json.loads(sync.stdout)["retired"] == [first.kid.hex()]
        assert verdict(first) == "unknown_key" and verdict(second) == "ok" and verdict(third) == "ok"

        listed = json.loads(crumb("pg", "keys", "list", "--dsn", db.dsn()).stdout)
        status = {k["kid"]: k["status"] for k in listed}
        assert status[first.kid.hex()] == "retired" and status[third.kid.hex()] == "trusted"
        url = issuer.url
    # The issuer gone: the sync fails and the keys stay as they were.
    failed = crumb("pg", "keys", "sync", "--dsn", db.dsn(), "--issuer", url)
    assert failed.returncode == 1 and "error:" in failed.stderr
    assert verdict(third) == "ok"


def test_a_kid_cannot_change_role(db, nodes, tmp_path):
    from crumb.keys import save

    save(nodes["gateway"], tmp_path / "gw.key")
    run = crumb("pg", "keys", "add", "--dsn", db.dsn(), "--pub", str(tmp_path / "gw.key.pub"))
    assert run.returncode == 1 and "another role" in run.stderr, run.stderr


def test_an_open_session_follows_key_changes_from_its_next_statement(db, app):
    """crumb.keys changes bump keys_version (a trigger); each call compares it, so an open session
    trusts a new key, and stops trusting a retired one, without reconnecting."""
    new = SigningKey.generate()

    def verdict() -> str:
        try:
            app.execute("SELECT crumb.verify(%s, %s, 'read')", (to_text(mint(new, scope=[(RES, "read")])), RES))
            app.commit()
            return "ok"
        except psycopg.Error as e:
            app.rollback()
            return code_of(e)

    assert verdict() == "unknown_key"
    add(db.dsn(), [new.public])
    assert verdict() == "ok"
    db.psql(f"UPDATE crumb.keys SET status = 'retired' WHERE kid = '\\x{new.kid.hex()}'")
    assert verdict() == "unknown_key"


def test_a_policy_check_in_an_open_session_follows_key_changes_too(db, app):
    """The same through crumb.allows(), whose first use in a transaction takes one statement:
    the token is checked with the keys the session last saw and the use is spent by the
    statement that reads the keys' version. A key retired since must still refuse, and the
    use taken for the refused token must go back with the statement."""
    new = SigningKey.generate()
    add(db.dsn(), [new.public])
    assert insert(app, mint(new, sub="dev-0001", scope=[(RES, "publish")])) == OK  # the session knows the key
    db.psql(f"UPDATE crumb.keys SET status = 'retired' WHERE kid = '\\x{new.kid.hex()}'")
    late = mint(new, sub="dev-0001", scope=[(RES, "publish")])
    assert insert(app, late) == "unknown_key"
    cti = Claims.decode(split(to_bytes(late)).authority.payload).cti
    assert db.psql(f"SELECT count(*) FROM crumb.spent WHERE cti = '\\x{cti.hex()}'").strip() == "0"
    db.psql(f"UPDATE crumb.keys SET status = 'trusted' WHERE kid = '\\x{new.kid.hex()}'")
    assert insert(app, late) == OK  # nothing of it was spent by the refusal
