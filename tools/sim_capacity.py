#!/usr/bin/env python3
"""How large a fleet this machine holds: the scale scenario at growing sizes, and whether each held.

    .venv/bin/python tools/sim_capacity.py [--sizes 200,400,600,800,1000] [--duration 30] [--scenario FILE]

Runs `crumb sim SCENARIO --devices N` for each N (one token per call in the
scale scenario) and says, from each run's summary.json, whether the fleet
held:

* on schedule: the readings the services accepted are at least 97 % of those
  due (each device sends at boot, then every telemetry_every seconds, so the
  due count follows from the plan's boot times);
* nothing lost: no call refused by a service, none left unsent (no token,
  service unreachable);
* responsive: p99 of the token exchanges and of the accepted calls under 1 s.

The largest N that held is what examples/scenarios/scale.toml ships with
(docs/simulator.md, "Scale"). The machine is shared: run it when it is
quiet, and more than once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def due(summary: dict, every: float) -> int:
    d = summary["duration"]
    return sum(int((d - dev["boot_at"]) // every) + 1 for dev in summary["schedule"]["devices"]
               if dev["boot_at"] < d)


def judge(s: dict, every: float) -> tuple[bool, dict]:
    calls = s["calls"]
    expected = due(s, every)
    got = calls["accepted_by_call"].get("telemetry", 0) + calls["accepted_by_call"].get("mqtt", 0)
    row = {
        "devices": s["devices"], "due": expected, "accepted": got, "on_schedule": round(got / expected, 3),
        "refused": sum(calls["rejected_by_code"].values()), "not_sent": sum(calls["not_sent_by_reason"].values()),
        "token_p99_ms": s["token_latency_ms"]["p99"], "call_p99_ms": calls["latency_ms"]["p99"],
        "sim_cpu_share": s["sim_cpu_share"], "sim_cpu_s": s["cpu"]["sim_seconds"],
        "services_cpu_s": s["cpu"]["services_seconds"], "wall_s": s["cpu"]["wall_seconds"],
    }
    held = (row["on_schedule"] >= 0.97 and not row["refused"] and not row["not_sent"]
            and (row["token_p99_ms"] or 0) < 1000 and (row["call_p99_ms"] or 0) < 1000)
    return held, row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,400,600,800,1000")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--scenario", default=str(REPO / "examples" / "scenarios" / "scale.toml"))
    ap.add_argument("--every", type=float, default=None, help="the scenario's telemetry_every (read from it)")
    a = ap.parse_args()
    import tomllib

    every = a.every or tomllib.loads(Path(a.scenario).read_text())["workload"]["telemetry_every"]
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([sys.executable, "-m", "crumb.cli", "sim", a.scenario, "--devices", str(n),
                                "--duration", str(a.duration), "--report", d, "--no-live", "--json"],
                               capture_output=True, check=False, text=True, cwd=REPO)
            if p.returncode not in (0, 1):
                print(f"{n}: crumb sim failed ({p.returncode}): {p.stderr.strip()[-500:]}", file=sys.stderr)
                break
            held, row = judge(json.loads((Path(d) / "summary.json").read_text()), every)
        row["held"] = held
        rows.append(row)
        print(json.dumps(row), flush=True)
    holding = [r["devices"] for r in rows if r["held"]]
    print(f"largest fleet that held: {max(holding) if holding else 'none'} devices "
          f"(of {', '.join(str(r['devices']) for r in rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
