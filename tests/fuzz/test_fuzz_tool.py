"""tools/fuzz.py itself: the target list, the --json contract, and findings counted and saved.

These run atheris for a few seconds (the dev extra installs it). The assertions
are about what was found, never about how many inputs a machine managed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from crumb.tooling.fuzz import TARGETS

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "fuzz.py"


def _run(*args: str, work: Path | None = None, extra: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "host"), str(ROOT / "device"), str(ROOT)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if work is not None:
        env["CRUMB_FUZZ_WORK"] = str(work)
    if extra is not None:
        env["CRUMB_FUZZ_EXTRA_TARGETS"] = extra
    return subprocess.run([sys.executable, str(TOOL), *args], check=False, capture_output=True, text=True, env=env,
                          timeout=300)


def test_list_prints_every_target_one_per_line():
    out = _run("--list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == [*TARGETS, ""]


def test_help_names_the_options():
    out = _run("--help")
    assert out.returncode == 0
    for option in ("--seconds", "--json", "--list", "--replay", "--write-seeds"):
        assert option in out.stdout


def test_json_contract_on_a_clean_run(tmp_path):
    out = _run("cbor", "--seconds", "2", "--json", work=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["target"] == "cbor"
    assert result["crashes"] == 0 and result["findings"] == []
    assert isinstance(result["executions"], int) and result["executions"] > 0


def test_findings_are_counted_once_each_and_saved(tmp_path):
    out = _run("planted", "--seconds", "3", "--json", work=tmp_path, extra="tests.fuzz.planted")
    assert out.returncode == 1, out.stdout + out.stderr
    result = json.loads(out.stdout)
    kinds = sorted(f["signature"].split(" ")[0] for f in result["findings"])
    assert kinds == ["TypeError", "WorkExceeded"], result
    assert result["crashes"] == 2
    for finding in result["findings"]:
        saved = Path(finding["file"])
        assert saved.parent == tmp_path / "crashes" / "planted"
        assert saved.read_bytes()[0] % 2 == (0 if finding["signature"].startswith("TypeError") else 1)


def test_replay_reports_a_finding_and_passes_clean_inputs(tmp_path):
    (tmp_path / "ok").write_bytes(b"")
    (tmp_path / "bad").write_bytes(b"\x02")
    out = _run("planted", "--replay", str(tmp_path), extra="tests.fuzz.planted")
    assert out.returncode == 1
    assert "FINDING" in out.stdout and "bad: TypeError" in out.stdout
    assert "ok       " in out.stdout


_COUNT_INSTRUMENTED = """
import sys, atheris
with atheris.instrument_imports(include=["crumb", "ucrumb"]):
    from crumb.tooling.fuzz import TARGETS, run_guarded
print(run_guarded(TARGETS["keyset"], bytes.fromhex(sys.argv[1])))
"""


def test_the_work_guard_counts_the_same_under_atheris_instrumentation():
    """The guard's verdict must not depend on the fuzzer: atheris's coverage hooks are C calls
    it adds (about 5x the code's own), and counting them made deep but bounded key sets
    'exceed' their bound while fuzzing and pass on --replay."""
    from crumb.tooling.fuzz import run_guarded

    data = b'{"keys":' + b"[" * 1200 + b"]" * 1200 + b"}"
    plain = run_guarded(TARGETS["keyset"], data)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "host"), str(ROOT / "device"), str(ROOT)])
    out = subprocess.run([sys.executable, "-c", _COUNT_INSTRUMENTED, data.hex()], check=False, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == plain
