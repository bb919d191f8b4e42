"""The command line, and the issuer following key rotation and policy edits while it runs."""

from __future__ import annotations

import json
import os
import stat
import time

import httpx

from crumb.issuer.protocol import build_request, derive_device_key, parse_response
from crumb.replay import MemoryReplayStore
from crumb.services.keyset import parse_json
from crumb.tooling.issuerclient import Credentials, IssuerClient
from crumb.tooling.localissuer import IssuerFailed, LocalIssuer
from crumb.verify import Verifier

from .conftest import crumb_cli, start_issuer
from .policies import POLICY


def test_device_add_prints_the_credentials_file(tmp_path):
    (tmp_path / "p.toml").write_text(POLICY)
    r = crumb_cli("device", "add", "dev-cli-1", "--group", "sensors", "--data", str(tmp_path / "d"),
                  "--config", str(tmp_path / "p.toml"), check=True)
    creds = json.loads(r.stdout)
    master = bytes.fromhex((tmp_path / "d" / "master.key").read_text().strip())
    assert creds == {"device_id": "dev-cli-1", "key": derive_device_key(master, "dev-cli-1").hex(),
                     "issuer": "http://127.0.0.1:1", "group": "sensors"}
    assert Credentials.from_json(r.stdout).key == derive_device_key(master, "dev-cli-1")
    out = tmp_path / "creds.json"
    crumb_cli("device", "add", "dev-cli-2", "--data", str(tmp_path / "d"), "--url", "https://issuer.example",
              "--out", str(out), check=True)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert json.loads(out.read_text())["issuer"] == "https://issuer.example"
    assert stat.S_IMODE(os.stat(tmp_path / "d" / "master.key").st_mode) == 0o600


def test_device_revoke_is_final_and_listed(tmp_path):
    d = str(tmp_path)
    crumb_cli("device", "add", "dev-r", "--data", d, check=True)
    assert "revoked dev-r" in crumb_cli("device", "revoke", "dev-r", "--reason", "lost", "--data", d,
                                        check=True).stdout
    assert "already revoked" in crumb_cli("device", "revoke", "dev-r", "--data", d, check=True).stdout
    again = crumb_cli("device", "add", "dev-r", "--data", d)
    assert again.returncode == 2 and "cannot be trusted again" in again.stderr
    listing = crumb_cli("device", "list", "--data", d, check=True).stdout
    assert "dev-r" in listing and "revoked" in listing and "(lost)" in listing


def test_bad_arguments_are_usage_errors(tmp_path):
    assert crumb_cli("device", "add", "bad id", "--data", str(tmp_path)).returncode == 2
    assert crumb_cli("audit", "verify", "--data", str(tmp_path / "none")).returncode == 2
    assert crumb_cli("keys", "list", "--data", str(tmp_path / "none")).returncode == 2


def test_serve_without_config_denies_everything_and_says_so(tmp_path):
    issuer = LocalIssuer(tmp_path / "data").start()
    try:
        log = issuer.log_tail()
        assert "every request is denied" in log and str(tmp_path / "data") in log
        # One line says which audit writer runs (CRUMB_NATIVE reaches the child as it reaches this process).
        from crumb.issuer import _native

        assert [line for line in log.splitlines() if "audit writer" in line] == \
            [f"  audit writer {_native.describe()}"]
        creds = Credentials("dev-x", derive_device_key(
            bytes.fromhex((tmp_path / "data" / "master.key").read_text().strip()), "dev-x"), issuer.url)
        crumb_cli("device", "add", "dev-x", "--data", str(tmp_path / "data"), check=True)
        with _client(creds) as c:
            assert c.request([("/anything", "read")]).code == "scope_denied"
    finally:
        issuer.close()


class _client:
    def __init__(self, creds):
        self.c = IssuerClient(creds)

    def __enter__(self):
        return self.c

    def __exit__(self, *exc):
        self.c.close()


def test_serve_refuses_a_broken_policy(tmp_path):
    (tmp_path / "p.toml").write_text("[defaults]\nttl = 0\n")
    issuer = LocalIssuer(tmp_path / "data", tmp_path / "p.toml")
    try:
        issuer.start()
        raise AssertionError("started with a broken policy")
    except IssuerFailed as e:
        assert "p.toml:2: defaults.ttl" in str(e)


def test_key_rotation_while_serving(tmp_path):
    issuer, _ = start_issuer(tmp_path)
    try:
        crumb_cli("device", "add", "dev-rot", "--group", "sensors", "--data", str(issuer.data), check=True)
        master = bytes.fromhex((issuer.data / "master.key").read_text().strip())
        key = derive_device_key(master, "dev-rot")

        def token() -> bytes:
            r = httpx.post(f"{issuer.url}/token", headers={"content-type": "application/ace+cbor"},
                           content=build_request("dev-rot", key, [("/sensors/t", "read")]))
            return parse_response(r.content).tokens[0][0]

        old = token()
        rotated = crumb_cli("keys", "rotate", "--data", str(issuer.data), check=True).stdout
        new_kid = rotated.split()[1]
        deadline = time.monotonic() + 5
        while True:
            doc = httpx.get(f"{issuer.url}/keys").json()
            if doc["keys"][0]["kid"] == new_kid or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert next((k["kid"], k["status"]) for k in doc["keys"]) == (new_kid, "current")
        assert doc["keys"][1]["status"] == "previous"
        new = token()
        keys = parse_json(httpx.get(f"{issuer.url}/keys").content)
        v = Verifier(list(keys.issuer.values()), replay=MemoryReplayStore(fence=False))
        assert v.verify(old, "/sensors/t", "read") and v.verify(new, "/sensors/t", "read")
        from crumb.token import authority_kid, split
        assert authority_kid(split(new).authority.protected).hex() == new_kid
        listing = crumb_cli("keys", "list", "--data", str(issuer.data), check=True).stdout
        assert listing.startswith(f"current  {new_kid}")
        # a second rotation retires the first key: it is no longer published
        crumb_cli("keys", "rotate", "--data", str(issuer.data), check=True)
        time.sleep(1.3)
        kids = [k["kid"] for k in httpx.get(f"{issuer.url}/keys").json()["keys"]]
        assert len(kids) == 2 and new_kid in kids
    finally:
        issuer.close()


def test_policy_edits_apply_while_serving_and_broken_edits_do_not(tmp_path):
    issuer, config = start_issuer(tmp_path)
    try:
        crumb_cli("device", "add", "dev-pol", "--group", "sensors", "--data", str(issuer.data), check=True)
        master = bytes.fromhex((issuer.data / "master.key").read_text().strip())
        key = derive_device_key(master, "dev-pol")

        def ask(resource: str) -> str | None:
            r = httpx.post(f"{issuer.url}/token", headers={"content-type": "application/ace+cbor"},
                           content=build_request("dev-pol", key, [(resource, "read")]))
            return parse_response(r.content).code

        assert ask("/new/thing") == "scope_denied"
        config.write_text(POLICY + '\n[[groups.sensors.allow]]\nresource = "/new/*"\noperations = ["read"]\n')
        deadline = time.monotonic() + 5
        while ask("/new/thing") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ask("/new/thing") is None
        config.write_text("this is = not toml [")
        time.sleep(1.5)
        assert ask("/new/thing") is None  # the previous policy stays in force
        metrics = httpx.get(f"{issuer.url}/metrics").text
        assert "crumb_issuer_policy_reload_errors_total 1" in metrics
        assert "policy change refused" in issuer.log_tail()
        # Taking the permission away again stops issuance for a device that was just issued to.
        config.write_text(POLICY)
        deadline = time.monotonic() + 5
        while ask("/new/thing") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ask("/new/thing") == "scope_denied"
    finally:
        issuer.close()
