"""Bad input: one clear line on stderr, exit 2, no traceback, nothing started for nothing."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from .conftest import SCENARIOS, sim

GOOD = """\
[run]
devices = 2
duration = 20

[workload]
telemetry_every = 2
"""


def one_line_error(run) -> str:
    assert run.rc == 2, (run.rc, run.out[-2000:], run.err[-2000:])
    assert "Traceback" not in run.err and "Traceback" not in run.out
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    return lines[0]


@pytest.mark.parametrize("text, line, words", [
    (GOOD + "\n[device]\nbatch = 4\nbatchh = 8\n", 10, "device.batchh: unknown setting"),
    (GOOD.replace("telemetry_every = 2", "telemetry_every = -1"), 6, "workload.telemetry_every: must be > 0"),
    (GOOD + "\n[network]\ndrop = -0.1\n", 9, "network.drop: must be between 0 and 1"),
    (GOOD + "\n[[fault]]\nkind = \"issuer_outage\"\nat = 15\nduration = 10\n", 8,
     "issuer_outage fault window 15–25 s is outside the run (0–20 s)"),
    (GOOD + "\n[[fault]]\nkind = \"clock_jump\"\nat = 5\nservice = \"gateway\"\n", 11,
     "fault[0].service: not a setting of a clock_jump fault"),
    (GOOD + "\n[bogus]\nx = 1\n", 8, "bogus: unknown section"),
    (GOOD + "\n[device\n", 8, "Expected ']'"),
])
def test_malformed_scenario_names_its_line(tmp_path, text, line, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    err = one_line_error(sim(str(path), report=tmp_path / "r"))
    assert f"{path}:{line}:" in err and words in err, err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_missing_scenario_file(tmp_path):
    err = one_line_error(sim(str(tmp_path / "nope.toml"), report=tmp_path / "r"))
    assert "cannot read scenario" in err


def test_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        err = one_line_error(sim(str(SCENARIOS / "attacker.toml"), "--duration", "5", "--issuer-port", str(port),
                                 report=tmp_path / "r"))
    assert f"--issuer-port {port}" in err and "busy" in err


def test_unwritable_report_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = one_line_error(sim(str(SCENARIOS / "attacker.toml"), "--duration", "5", report=blocker / "report"))
    assert f"--report {blocker / 'report'}: cannot write there" in err


def test_a_service_that_does_not_start_shows_its_log_tail(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "mosquitto"
    script.write_text("#!/bin/sh\necho 'Error: Unable to open the listener socket (a broken broker for the test)'\n"
                      "exit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    err = one_line_error(sim(str(SCENARIOS / "flaky-network.toml"), "--duration", "5", "--devices", "2",
                             report=tmp_path / "r", env=env))
    assert "mosquitto did not start" in err and "a broken broker for the test" in err, err


def test_external_issuer_needs_credentials(tmp_path):
    err = one_line_error(sim(str(SCENARIOS / "attacker.toml"), "--issuer", "http://127.0.0.1:9",
                             report=tmp_path / "r"))
    assert "--credentials" in err
