"""The attacker scenario: every attempt refused, each with the code its kind must get."""

from __future__ import annotations

import re
from html import unescape

from crumb.tooling.sim.plan import ATTACK_SPEC


def test_no_attack_succeeds_and_each_is_refused_with_its_code(attacker_run):
    s = attacker_run.summary
    attacks = s["attacks"]
    assert attacks, "the attacker made no attempt"
    assert s["attacker_successes"] == 0
    for a in attacks:
        assert set(a) >= {"kind", "target", "outcome", "code"}
        assert a["outcome"] == "refused", a
        _, target, expected, _ = ATTACK_SPEC[a["kind"]]
        assert a["code"] == expected == a["expected"], a
        assert a["target"] == target
    # every kind the scenario's services allow was tried (no MQTT here)
    assert {a["kind"] for a in attacks} == set(ATTACK_SPEC) - {"mqtt_replay"}
    assert not s["attacks_skipped"], s["attacks_skipped"]


def test_the_devices_worked_while_the_attacker_tried(attacker_run):
    s = attacker_run.summary
    assert s["tokens"]["issued"] > 0
    assert s["calls"]["accepted_by_call"]["telemetry"] > 0 and s["calls"]["accepted_by_call"]["poll"] > 0
    assert not s["calls"]["rejected_by_code"]  # the attacker's refusals are its own, not the devices'
    assert s["commands"]["queued"] > 0 and s["commands"]["device_verdicts"].get("applied", 0) > 0


def test_the_summary_table_says_how_each_attack_was_refused(attacker_run):
    out = attacker_run.out
    for kind, (_, _, code, _) in ATTACK_SPEC.items():
        if kind == "mqtt_replay":
            continue
        assert re.search(rf"attack: {kind}\s+│\s+refused {code} ×\d+", out), kind
    for label in ("devices", "tokens", "authorized calls"):
        assert label in out
    assert "report: " in out


def test_the_report_has_its_charts(attacker_run):
    html = unescape(attacker_run.html)
    assert len(re.findall(r'<svg class="chart"', html)) >= 3
    for title in ("Latency over time", "Cache hits vs issuer requests", "Outcomes by code", "The attacker's attempts"):
        assert title in html
    # readable offline: no script, nothing loaded from elsewhere
    assert "<script" not in html and "src=" not in html and "href=" not in html and "@import" not in html
