"""Every shipped scenario runs, briefly, end to end against the real services."""

from __future__ import annotations

import re

import pytest

from .conftest import SCENARIOS, Run, sim_together

SHIPPED = ["baseline", "flaky-network", "issuer-outage", "attacker", "scale"]

# One run per scenario, shared by every test that reads it (each run costs its
# duration plus about 8 s of start-up and the replay stores' restart fence,
# mostly waiting, so the runs go side by side). flaky-network and
# issuer-outage run at the size their fault tests need, and
# test_scenario_runs_briefly reads the same runs; the attacker scenario's run is
# the first of test_determinism's two (conftest.seeded_attacker_runs).
SIZES = {"baseline": (6, 10), "scale": (6, 10), "flaky-network": (8, 12), "issuer-outage": (6, 24),
         "attacker": (6, 10)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """The four scenarios' runs, side by side (conftest.sim_together): about the wall time of the longest."""
    names = [n for n in SIZES if n != "attacker"]
    base = tmp_path_factory.mktemp("scenarios")
    done = sim_together(*[((str(SCENARIOS / f"{n}.toml"), "--devices", str(SIZES[n][0]), "--duration",
                            str(SIZES[n][1])), base / n) for n in names])
    return dict(zip(names, done))


# Shipped too, and run end to end by tests/sim/test_attacker.py (its own services: PoP rules).
RUN_ELSEWHERE = ["attacker-pop"]


def test_the_shipped_scenarios_are_these():
    assert sorted(p.stem for p in SCENARIOS.glob("*.toml")) == sorted(SHIPPED + RUN_ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_scenario_runs_briefly(name, runs, request):
    run = request.getfixturevalue("seeded_attacker_runs")[0] if name == "attacker" else runs[name]
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    assert "Traceback" not in run.err
    s = run.summary
    devices, duration = SIZES[name]
    assert s["scenario"] == name and s["devices"] == devices and s["duration"] == duration
    # every fault and burst the scenario schedules was applied, and a scenario with an attacker attacked
    planned = {f["kind"] for f in s["schedule"]["faults"]}
    assert planned <= {f["fault"] for f in s["faults_applied"]}, (planned, s["faults_applied"])
    assert bool(s["attacks"]) == (name == "attacker"), s["attacks"]
    # devices got tokens and calls went through
    assert s["tokens"]["issued"] > 0 and s["authorized_calls"] > 0
    assert s["calls"]["accepted_by_call"].get("telemetry", 0) + s["calls"]["accepted_by_call"].get("mqtt", 0) > 0
    for key in ("tokens", "cache_hit_rate", "round_trips_per_authorized_call", "bytes_per_authorized_call",
                "token_latency_ms", "calls", "attacks", "sim_cpu_share", "versions", "seed", "schedule"):
        assert key in s, key
    assert set(s["token_latency_ms"]) >= {"p50", "p95", "p99"}
    assert s["versions"]["crumb-auth"] and s["versions"]["adafruit-blinka"]
    assert 0 < s["sim_cpu_share"] < 1
    assert s["attacker_successes"] == 0
    assert len(re.findall(r'<svg class="chart"', run.html)) == 4
    assert f"report: {run.report.resolve() / 'report.html'}" in run.out.replace("\n", "")
    assert (run.report / "events.jsonl").stat().st_size > 0


@pytest.mark.slow
def test_flaky_network_applies_its_faults(runs):
    run = runs["flaky-network"]
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    s = run.summary
    applied = {(f["fault"], f["phase"]) for f in s["faults_applied"]}
    for fault in ("network", "verifier_restart", "redis_restart"):
        assert (fault, "end") in applied, (fault, applied)
    assert ("clock_jump", "start") in applied and ("burst:reboot", "start") in applied
    assert s["devices_lifecycle"].get("reset", 0) >= 1  # the reboot burst
    assert s["calls"]["accepted_by_call"].get("mqtt", 0) > 0  # part of the fleet reports over MQTT
    fates = s["tokens"]["failed_by_fate"]
    assert isinstance(fates, dict)


@pytest.mark.slow
def test_issuer_outage_is_ridden_out_from_the_cache(runs):
    run = runs["issuer-outage"]
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    s = run.summary
    start = next(f["t"] for f in s["faults_applied"] if f["fault"] == "issuer_outage" and f["phase"] == "start")
    end = next(f["t"] for f in s["faults_applied"] if f["fault"] == "issuer_outage" and f["phase"] == "end")
    events = [__import__("json").loads(line) for line in (run.report / "events.jsonl").read_text().splitlines()]
    during = [e for e in events if e["kind"] == "call" and start < e["t"] < end and e["trips"] == 0]
    refused = [e for e in events if e["kind"] == "exchange" and e["service"] == "issuer" and e["fate"] == "outage"]
    after = [e for e in events if e["kind"] == "exchange" and e["service"] == "issuer" and e["t"] > end
             and e.get("status") == 200]
    assert during, "no call was served from the cache during the outage"
    assert all(start <= e["t"] <= end + 0.5 for e in refused)
    assert after, "no device got tokens again after the outage"
