"""`crumb sim --issuer URL --credentials DIR ...`: a fleet against services it did not start."""

from __future__ import annotations

import json

from crumb.tooling.sim.events import Recorder
from crumb.tooling.sim.plan import CONSOLE, Plan
from crumb.tooling.sim.scenario import Scenario, resolve
from crumb.tooling.sim.stack import Stack

from .conftest import SCENARIOS, sim


def test_sim_against_a_running_issuer_and_chain(tmp_path):
    sc = resolve(Scenario(devices=3, duration=10, chain=True, commands=True))
    plan = Plan(sc)
    stack = Stack(sc, plan, tmp_path / "stack", Recorder()).start()  # "someone else's" deployment
    try:
        creds = tmp_path / "creds"
        creds.mkdir()
        for i, d in enumerate(plan.devices):
            (creds / f"{i}.json").write_text(json.dumps({**stack.creds[d.id], "group": "sensors"}))
        (creds / "operator.json").write_text(json.dumps({**stack.creds[CONSOLE], "group": "operators"}))
        u = stack.urls
        run = sim(str(SCENARIOS / "attacker.toml"), "--devices", "3", "--duration", "8", "--issuer", u["issuer"],
                  "--credentials", str(creds), "--gateway", u["gateway"], "--ingest", u["ingest"],
                  "--commands", u["commands"], report=tmp_path / "report")
    finally:
        stack.stop()
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    s = run.summary
    assert s["services"]["issuer"] == u["issuer"] and s["services"]["gateway"] == u["gateway"]
    assert s["authorized_calls"] > 0 and s["tokens"]["issued"] > 0
    assert s["sim_cpu_share"] is None and s["cpu"]["services_measured"] == []  # it started nothing to measure
    assert s["attacks"] and all(a["outcome"] == "refused" and a["code"] == a["expected"] for a in s["attacks"])
    # the service outside the chain is not there to attack: those attempts are skipped, and say why
    assert all(a["kind"] == "other_service" for a in s["attacks_skipped"])
