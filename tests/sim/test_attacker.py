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
    # the valves verify each command's own token (verify_commands): nothing valid is refused for a
    # wrong reason; "replayed" only for a command whose token was issued before the device's boot
    assert set(s["commands"]["device_verdicts"]) <= {"applied", "old", "stale", "replayed"}, s["commands"]


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


def test_mqtt_envelopes_published_again_are_refused(tmp_path):
    from .conftest import sim

    scenario = tmp_path / "mqtt-attack.toml"
    scenario.write_text('[run]\nname = "mqtt-attack"\ndevices = 4\nduration = 10\n\n[services]\nmqtt = true\n\n'
                        '[device]\ntransport = "mixed"\nmqtt_share = 0.5\n\n'
                        '[attacker]\nenabled = true\nevery = 1\nkinds = ["mqtt_replay", "replay"]\n')
    run = sim(str(scenario), report=tmp_path / "r")
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    s = run.summary
    mqtt = [a for a in s["attacks"] if a["kind"] == "mqtt_replay"]
    assert mqtt and all(a["outcome"] == "refused" and a["code"] == "replayed" for a in mqtt)
    assert s["calls"]["accepted_by_call"].get("mqtt", 0) > 0
    assert not s["calls"]["rejected_by_code"]  # the attacker's copies are not counted as the devices' calls


def test_pop_variant_every_use_of_a_capture_is_refused_pop_failed(tmp_path):
    # examples/scenarios/attacker-pop.toml: readings' tokens are proof-of-possession tokens; the
    # attacker has each captured token and its proof, and gets nowhere with them.
    from crumb.tooling.sim.plan import POP_ATTACKS

    from .conftest import SCENARIOS, sim

    run = sim(str(SCENARIOS / "attacker-pop.toml"), "--duration", "5", "--devices", "4", report=tmp_path / "r")
    assert run.rc == 0, run.out[-3000:] + run.err[-3000:]
    s = run.summary
    attacks = s["attacks"]
    assert {a["kind"] for a in attacks} == set(POP_ATTACKS)
    assert s["attacker_successes"] == 0
    assert all(a["outcome"] == "refused" and a["code"] == a["expected"] == "pop_failed" for a in attacks), attacks
    assert not s["attacks_skipped"], s["attacks_skipped"]
    assert s["calls"]["accepted_by_call"]["telemetry"] > 0  # the devices' own proofs were good
    assert not s["calls"]["rejected_by_code"]
