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


@pytest.fixture(scope="session")
def attacker_run(tmp_path_factory) -> Run:
    """One short run of the attacker scenario, shared by the tests that read its report."""
    report = tmp_path_factory.mktemp("attacker")
    run = sim(str(SCENARIOS / "attacker.toml"), "--devices", "10", "--duration", "14", "--seed", "3",
              report=report)
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    return run
