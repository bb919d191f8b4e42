"""The command service (examples/chain/commands.py) against the real issuer: who may queue, who may read."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_actuator_verifies_each_command_and_refuses_a_replayed_one(tmp_path):
    # issue 18 end to end: the operator queues a command carrying a second token of its own, for the
    # valve and the operation with the device as audience; the device (crumb_app, on CPython) polls
    # the real command service and verifies that token itself before it acts. An attacker who can
    # queue (here: another operator token, as a compromised console or service could) re-queues the
    # captured command token: the command service accepts it, the device refuses it (replayed).
    import importlib.util
    import sys

    from crumb.services.keyfetch import FetchedKeys
    from ucrumb import http
    from ucrumb.client import Client

    sc = resolve(Scenario(devices=1, duration=10, chain=False, commands=True))
    plan = Plan(sc)
    stack = Stack(sc, plan, tmp_path, Recorder()).start()
    firmware = Path(__file__).resolve().parents[2] / "firmware"
    try:
        issuer_url, base = stack.urls["issuer"], stack.urls["commands"]
        pinned = [k.raw.hex() for k in FetchedKeys(issuer_url + "/keys").fetch().issuer.values()]
        me = "dev-0001"
        cred = tmp_path / "crumb.json"
        cred.write_text(json.dumps({**stack.creds[me], "issuer": issuer_url}))
        sys.path.insert(0, str(firmware))
        try:
            spec = importlib.util.spec_from_file_location("crumb_app_e2e", firmware / "crumb_app.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        finally:
            sys.path.remove(str(firmware))
        log: list = []
        app = mod.App({"watchdog_ms": 0, "commands": base, "command_keys": pinned, "timeout": 5}, str(cred),
                      log=lambda *a: log.append(a))
        c = stack.creds[CONSOLE]
        console = Client(issuer_url, c["device_id"], bytes.fromhex(c["key"]), batch=1)
        for_device = Client(issuer_url, c["device_id"], bytes.fromhex(c["key"]), batch=1, audience=me)
        # the device has been up for a while: its replay floor (boot + leeway) is behind the tokens below
        from ucrumb.http import ticks_add, ticks_ms

        app.verifier._born = ticks_add(ticks_ms(), -60_000)

        def queue(op: str, token: bytes) -> int:
            status, _, _ = http.request("POST", f"{base}/valves/{me}/{op}", json.dumps({"token": token.hex()}),
                                        {"Authorization": console.header(f"/valves/{me}", op),
                                         "Content-Type": "application/json"})
            return status

        captured = for_device.token(f"/valves/{me}", "open")
        assert queue("open", captured) == 202
        app.poll()
        assert log[-1] == ("command", 1, "open", "applied") and app.actuator.state is True
        assert queue("open", captured) == 202  # the command service sees a fresh authorization
        app.poll()
        assert log[-1] == ("command", 2, "open", "replayed")  # the device does not act twice on one token
        # a close token used for open, and one for another device: refused on the device too
        assert queue("open", for_device.token(f"/valves/{me}", "close")) == 202
        other = Client(issuer_url, c["device_id"], bytes.fromhex(c["key"]), batch=1, audience="dev-0002")
        assert queue("open", other.token(f"/valves/{me}", "open")) == 202
        app.poll()
        assert [e[-1] for e in log[-2:]] == ["scope_denied", "scope_denied"]
        assert queue("close", for_device.token(f"/valves/{me}", "close")) == 202
        app.poll()
        assert log[-1] == ("command", 5, "close", "applied") and app.actuator.state is False
    finally:
        stack.stop()
