"""tools/hardening.py: its quick run holds, its JSON has the documented shape, and it counts honestly."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "hardening.py"


def load():
    spec = importlib.util.spec_from_file_location("hardening", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hardening"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess:
    # The child pytest imports crumb the way this process does (PYTHONPATH is inherited).
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, check=False, env=os.environ.copy())


# The quick run over every class runs about forty cases, each of them also a test
# of this suite (the both-paths ones in the Makefile's CRUMB_NATIVE=0 pass too):
# running them all again here cost ~40 s and proved nothing those runs do not.
# So the script runs for real over a documented sample (QUICK_SAMPLE: both
# kinds, both audit-writer paths, ~1 s of cases), and every class's quick node
# ids are checked to still name collected tests (a stale id is what an empty
# row in the full run would report).
QUICK_SAMPLE = ("audit log", "clock skew")
PARTS = ("issuer", "verifier", "middleware", "MQTT consumer", "audit log", "device client", "issuer killed",
         "Redis stopped", "Mosquitto restarted", "verifier restarted", "clock skew")


def test_quick_run_exits_0_with_rows_of_the_documented_shape():
    p = run("--json", "--quick", *(a for part in QUICK_SAMPLE for a in ("--only", part)))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["mode"] == "quick" and out["ok"] is True and out["lost"] == 0 and out["crashes"] == 0
    rows = out["classes"]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"attack", "fault"}
    for r in rows:
        assert {"class", "cases", "held", "lost"} <= set(r)
        assert r["cases"] > 0 and r["held"] == r["cases"] and r["lost"] == 0, r
    names = " ".join(r["class"] for r in rows)
    for part in ("audit log", "native path", "python path", "clock skew"):
        assert part in names, part
    assert out["fuzz"] == [] and "not run" in out["fuzz_note"]


def test_every_class_is_listed_and_its_quick_cases_are_tests_of_the_suite():
    h = load()
    names = " ".join(c.name for c in h.CLASSES)
    for part in PARTS:
        assert part in names, part
    assert {c.kind for c in h.CLASSES} == {"attack", "fault"}
    quick = sorted({s for c in h.CLASSES for s in c.quick})
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *quick],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=os.environ.copy())
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    collected = [line for line in p.stdout.splitlines() if "::" in line]
    for c in h.CLASSES:
        for s in c.quick:
            assert any(h._belongs(n, s) for n in collected), (c.name, s)


def test_passed_cases_hold_and_failed_xfailed_or_skipped_ones_are_lost():
    h = load()
    sample = "tests/faults/hardening_sample.py"
    [row] = h.run_classes([h.Class("sample", "attack", full=(sample,), quick=())], quick=False)
    assert (row.cases, row.held, row.lost) == (6, 3, 3)
    assert sorted(n.split("::")[1] for n in row.lost_ids) == [
        "test_lost", "test_lost_to_a_known_defect", "test_lost_when_skipped"]
    [one] = h.run_classes([h.Class("one", "fault", full=(sample + "::test_held_twice[2]",), quick=())], quick=False)
    assert (one.cases, one.held, one.lost) == (1, 1, 0)


def test_fuzzing_runs_tools_fuzz_or_says_it_could_not():
    p = run("--json", "--only", "verifier: key sets", "--quick", "--fuzz-seconds", "0.25")
    out = json.loads(p.stdout)
    if (ROOT / "tools" / "fuzz.py").exists():
        assert out["fuzz"] and all({"target", "executions", "crashes"} <= set(f) for f in out["fuzz"])
        assert p.returncode == (0 if out["crashes"] == 0 else 1)
    else:
        # Asked for and impossible: said so, and not a success.
        assert p.returncode == 1 and out["fuzz"] == [] and "tools/fuzz.py is absent" in out["fuzz_note"]
