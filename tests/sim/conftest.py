"""Running `crumb sim` as a user does: a subprocess, its exit status, its report folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "examples" / "scenarios"


@dataclass
class Run:
    rc: int
    out: str
    err: str
    report: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.report / "summary.json").read_text())

    @property
    def html(self) -> str:
        return (self.report / "report.html").read_text()


def sim(*args: str, report: Path | None = None, env: dict | None = None, timeout: float = 300) -> Run:
    cmd = [sys.executable, "-m", "crumb.cli", "sim", *args, "--no-live"]
    if report is not None:
        cmd += ["--report", str(report)]
    p = subprocess.run(cmd, capture_output=True, check=False, text=True, timeout=timeout, cwd=REPO,
                       env={**os.environ, **(env or {})})
    return Run(p.returncode, p.stdout, p.stderr, report or Path("."))


def sim_together(*runs: tuple[tuple[str, ...], Path], timeout: float = 300) -> list[Run]:
    """Several `crumb sim` runs at once, as separate processes: [Run] in the order given.

    A run spends most of its wall time waiting (the replay stores' restart fence,
    then the simulated seconds, which pass in real time) and little CPU (under
    2 s over a 10-24 s run at these fleet sizes, summary.json "cpu"), so runs
    side by side cost about as much wall time as the longest. Every service
    binds a free port (port 0), so they cannot collide.
    """
    procs = []
    for args, report in runs:
        report.mkdir(parents=True, exist_ok=True)
        out, err = (report.parent / f"{report.name}.stdout").open("w+"), (report.parent / f"{report.name}.stderr").open("w+")
        cmd = [sys.executable, "-m", "crumb.cli", "sim", *args, "--no-live", "--report", str(report)]
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO, env=dict(os.environ)),
                      out, err, report))
    done = []
    for proc, out, err, report in procs:
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        with out, err:
            out.seek(0)
            err.seek(0)
            done.append(Run(rc, out.read(), err.read(), report))
    return done


@pytest.fixture(scope="session")
def attacker_run(tmp_path_factory) -> Run:
    """One short run of the attacker scenario, shared by the tests that read its report."""
    report = tmp_path_factory.mktemp("attacker")
    run = sim(str(SCENARIOS / "attacker.toml"), "--devices", "10", "--duration", "14", "--seed", "3",
              report=report)
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    return run


@pytest.fixture(scope="session")
def seeded_attacker_runs(tmp_path_factory) -> list[Run]:
    """Two runs of the attacker scenario with one seed (6 devices, 10 s).

    test_determinism compares them; test_scenarios reads the first as the
    attacker scenario's brief run, so the suite pays for two runs, not three,
    and they run side by side (sim_together): both see the same conditions.
    """
    args = (str(SCENARIOS / "attacker.toml"), "--devices", "6", "--duration", "10", "--seed", "11")
    base = tmp_path_factory.mktemp("attacker-seed-11")
    return sim_together((args, base / "0"), (args, base / "1"))
