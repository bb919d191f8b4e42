"""`crumb sim --help` and `crumb demo` are there and say what they do."""

from __future__ import annotations

import subprocess
import sys


def crumb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True, timeout=60)


def test_sim_help():
    r = crumb("sim", "--help")
    assert r.returncode == 0
    for opt in ("--devices", "--seed", "--duration", "--report", "--issuer", "--credentials", "--gateway",
                "--broker", "--issuer-port", "SCENARIO.toml"):
        assert opt in r.stdout, opt
    assert "examples/scenarios/" in r.stdout


def test_demo_is_a_command():
    r = crumb("--help")
    assert r.returncode == 0 and " demo " in r.stdout and " sim " in r.stdout
    assert "one device" in crumb("demo", "--help").stdout.lower()
