"""The device library (ucrumb, on CPython) against the real issuer: the wire contract from both ends."""

from __future__ import annotations

import httpx

from crumb.replay import MemoryReplayStore
from crumb.services.keyset import parse_json
from crumb.verify import Verifier

from .conftest import crumb_cli


def test_ucrumb_gets_verifiable_tokens_from_the_issuer(served, tmp_path):
    from ucrumb.client import from_file

    creds = tmp_path / "crumb.json"
    crumb_cli("device", "add", "ucrumb-1", "--group", "sensors", "--data", str(served.data),
              "--url", served.url, "--out", str(creds), check=True)
    client = from_file(str(creds), batch=2)
    token = client.token("/sensors/temp01", "read")  # no clock yet: stale_time, resync, retry
    keys = parse_json(httpx.get(f"{served.url}/keys").content)
    v = Verifier(list(keys.issuer.values()), replay=MemoryReplayStore(fence=False))
    assert v.verify(token, "/sensors/temp01", "read").claims.sub == "ucrumb-1"
    second = client.token("/sensors/temp01", "read")  # the batch's other token, from the cache
    assert second != token and v.verify(second, "/sensors/temp01", "read")
    tail = crumb_cli("audit", "tail", "-n", "50", "--json", "--data", str(served.data), check=True).stdout
    mine = [line for line in tail.splitlines() if '"device":"ucrumb-1"' in line]
    assert '"event":"enrolled"' in mine[0]  # `crumb device add`, recorded before the registry commits
    assert '"code":"stale_time"' in mine[1] and '"event":"issued"' in mine[2]
