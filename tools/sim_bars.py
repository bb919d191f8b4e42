#!/usr/bin/env python3
"""The simulator's three bars, measured: run it on a quiet machine and read the figures it prints.

    .venv/bin/python tools/sim_bars.py [--out DIR]

1. `crumb sim examples/scenarios/attacker.toml --devices 20 --duration 20 --seed 1 --report DIR`
   exits 0; summary.json's `attacks` are {kind, target, outcome, code}, every
   outcome `refused`; report.html has at least 3 charts.
2. `crumb sim examples/scenarios/scale.toml --devices 200 --report DIR` (one token per call):
   `sim_cpu_share` <= 0.30.
3. `make demo` (the README's first command, set up already) finishes in <= 60 s.

Each figure comes from the command's own output (summary.json, report.html,
the wall time of `make demo`); the script only runs them and compares.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRUMB = [sys.executable, "-m", "crumb.cli"]


def attacker(out: Path) -> bool:
    report = out / "attacker"
    cmd = [*CRUMB, "sim", "examples/scenarios/attacker.toml", "--devices", "20", "--duration", "20", "--seed", "1",
           "--report", str(report), "--no-live"]
    p = subprocess.run(cmd, capture_output=True, check=False, text=True, cwd=REPO)
    s = json.loads((report / "summary.json").read_text()) if (report / "summary.json").exists() else {}
    attacks = s.get("attacks", [])
    shape = all({"kind", "target", "outcome", "code"} <= set(a) and a["outcome"] in ("refused", "accepted")
                for a in attacks)
    refused = sum(a["outcome"] == "refused" for a in attacks)
    charts = len(re.findall(r'<svg class="chart"', (report / "report.html").read_text())) if s else 0
    kinds = sorted({(a["kind"], a["code"]) for a in attacks})
    ok = p.returncode == 0 and shape and attacks and refused == len(attacks) and charts >= 3
    print(f"1. {' '.join(cmd[2:])}\n   exit {p.returncode}; attacks {len(attacks)}, refused {refused}, accepted "
          f"{len(attacks) - refused}; report.html charts {charts}  -> {'MET' if ok else 'NOT MET'}")
    print("   " + ", ".join(f"{k}: {c}" for k, c in kinds))
    return bool(ok)


def scale(out: Path) -> bool:
    report = out / "scale"
    cmd = [*CRUMB, "sim", "examples/scenarios/scale.toml", "--devices", "200", "--report", str(report), "--no-live"]
    p = subprocess.run(cmd, capture_output=True, check=False, text=True, cwd=REPO)
    s = json.loads((report / "summary.json").read_text())
    share, cpu = s["sim_cpu_share"], s["cpu"]
    ok = p.returncode == 0 and share is not None and share <= 0.30
    print(f"2. {' '.join(cmd[2:])}\n   exit {p.returncode}; sim_cpu_share {share} (simulator {cpu['sim_seconds']} s "
          f"CPU, services {cpu['services_seconds']} s, {s['duration']:g} s run, batch {s['batch']}, "
          f"{s['authorized_calls']} authorized calls, {s['tokens']['issued']} tokens)  -> {'MET' if ok else 'NOT MET'}")
    return ok


def demo() -> bool:
    t0 = time.monotonic()
    p = subprocess.run(["make", "demo"], capture_output=True, check=False, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    ok = p.returncode == 0 and wall <= 60
    print(f"3. make demo\n   exit {p.returncode}; {wall:.1f} s  -> {'MET' if ok else 'NOT MET'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="keep the reports here (default: a temporary folder)")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="crumb-sim-bars-"))
    results = [attacker(out), scale(out), demo()]
    print(f"reports in {out}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
