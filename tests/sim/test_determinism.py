"""For one seed, the same fault schedule, workload and attacker attempts on every run."""

from __future__ import annotations

from crumb.tooling.sim.plan import Plan
from crumb.tooling.sim.scenario import load, resolve

from .conftest import SCENARIOS


def _plan(name: str, seed: int) -> dict:
    sc = load(SCENARIOS / f"{name}.toml")
    sc.seed = seed
    return Plan(resolve(sc)).schedule()


def test_the_plan_is_a_function_of_the_seed():
    for name in ("flaky-network", "attacker", "issuer-outage"):
        assert _plan(name, 5) == _plan(name, 5)
        assert _plan(name, 5) != _plan(name, 6)
    p = _plan("flaky-network", 5)
    assert {f["kind"] for f in p["faults"]} >= {"network", "verifier_restart", "redis_restart", "clock_jump",
                                                   "burst:reboot"}


def test_link_fates_depend_only_on_the_seed_and_the_connection():
    sc = resolve(load(SCENARIOS / "flaky-network.toml"))
    a, b = Plan(sc), Plan(sc)
    link = a.link_at(0.0)
    draws = [(d, s, n) for d in ("dev-0001", "dev-0002") for s in ("issuer", "gateway") for n in range(200)]
    assert [a.fate(*k, link) for k in draws] == [b.fate(*k, link) for k in draws]
    fates = {a.fate(*k, link)[0] for k in draws}
    assert fates >= {"ok", "drop"}


def test_two_runs_with_the_same_seed_share_schedule_and_attempts(seeded_attacker_runs):
    runs = seeded_attacker_runs  # two runs, seed 11 (conftest; test_scenarios reads the first too)
    for r in runs:
        assert r.rc == 0, r.out[-2000:] + r.err[-2000:]
    s1, s2 = (r.summary for r in runs)
    assert s1["schedule"] == s2["schedule"]
    attempts = [[(a["kind"], a["target"], a["victim"], a["outcome"], a["code"]) for a in s["attacks"]]
                for s in (s1, s2)]
    assert attempts[0] == attempts[1] and attempts[0]
    assert [a["kind"] for a in s1["schedule"]["attacks"]] == [a["kind"] for a in s1["attacks"]]
