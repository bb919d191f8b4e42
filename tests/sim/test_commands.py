"""The command service (examples/chain/commands.py) against the real issuer: who may queue, who may read."""

from __future__ import annotations

import json

import pytest

from crumb.tooling.sim.events import Recorder
from crumb.tooling.sim.plan import CONSOLE, Plan
from crumb.tooling.sim.scenario import Scenario, resolve
from crumb.tooling.sim.stack import Stack


def test_queue_poll_and_refusals(tmp_path):
    from ucrumb import http
    from ucrumb.client import Client, Denied

    sc = resolve(Scenario(devices=2, duration=10, chain=False, commands=True))
    plan = Plan(sc)
    stack = Stack(sc, plan, tmp_path, Recorder()).start()
    try:
        def client(who: str) -> Client:
            c = stack.creds[who]
            return Client(stack.urls["issuer"], c["device_id"], bytes.fromhex(c["key"]), batch=1)

        base = stack.urls["commands"]
        op, a, b = client(CONSOLE), client("dev-0001"), client("dev-0002")
        auth = op.header("/valves/dev-0001", "open")
        status, _, body = http.request("POST", f"{base}/valves/dev-0001/open", b"", {"Authorization": auth})
        assert status == 202 and json.loads(body) == {"queued": 1}
        status, _, body = http.request("POST", f"{base}/valves/dev-0001/open", b"", {"Authorization": auth})
        assert status == 401 and json.loads(body)["code"] == "replayed"
        # the device reads its own queue
        status, _, body = http.request("GET", f"{base}/valves/dev-0001/commands?after=0", None,
                                       {"Authorization": a.header("/valves/dev-0001", "read")})
        (cmd,) = json.loads(body)["commands"]
        assert status == 200 and cmd["op"] == "open" and cmd["by"] == CONSOLE and cmd["seq"] == 1
        # another device, with a valid token for that valve, does not
        status, _, body = http.request("GET", f"{base}/valves/dev-0001/commands?after=0", None,
                                       {"Authorization": b.header("/valves/dev-0001", "read")})
        assert status == 403 and json.loads(body)["code"] == "scope_denied"
        # a device cannot queue commands: the policy gives it no open/close
        with pytest.raises(Denied) as refused:
            a.header("/valves/dev-0002", "open")
        assert refused.value.code == "scope_denied"
    finally:
        stack.stop()
