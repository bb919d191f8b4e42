"""The device workload as a Locust User, run headless for a few seconds against the real local stack."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from crumb.tooling.sim.events import Recorder
from crumb.tooling.sim.plan import Plan
from crumb.tooling.sim.scenario import Scenario, resolve
from crumb.tooling.sim.stack import Stack

from .conftest import REPO


def test_locust_drives_the_issuer_and_the_chain(tmp_path):
    sc = resolve(Scenario(devices=3, duration=10, chain=True, commands=True))
    plan = Plan(sc)
    stack = Stack(sc, plan, tmp_path / "stack", Recorder()).start()
    try:
        creds = tmp_path / "creds"
        creds.mkdir()
        for d in plan.devices:
            (creds / f"{d.id}.json").write_text(json.dumps(stack.creds[d.id]))
        env = {**os.environ, "CRUMB_CREDENTIALS": str(creds), "CRUMB_GATEWAY": stack.urls["gateway"],
               "CRUMB_COMMANDS": stack.urls["commands"], "CRUMB_EVERY": "0.5"}
        prefix = tmp_path / "locust"
        p = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "examples" / "locustfile.py"),
                            "--headless", "-u", "3", "-r", "3", "-t", "5s", "--csv", str(prefix), "--only-summary",
                            "--exit-code-on-error", "1"],
                           capture_output=True, check=False, text=True, timeout=120, env=env, cwd=tmp_path)
    finally:
        stack.stop()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(f"{prefix}_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    total = rows[("", "Aggregated")]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total
    kinds = {t for t, _ in rows if t}
    assert {"token", "reading", "poll"} <= kinds, kinds
