"""Policy files: what they allow, and how their mistakes are explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from crumb.issuer.policy import Policy, PolicyError, load, parse

from .conftest import crumb_cli
from .policies import POLICY

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "issuer-policy.toml"


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PolicyError) as e:
        parse(text, "p.toml")
    return e.value.problems


def test_example_and_suite_policies_are_valid():
    example = load(EXAMPLE)
    assert set(example.groups) == {"sensors", "actuators"} and example.rule_count == 5
    assert parse(POLICY).name == "crumb-test"


def test_empty_policy_denies_everything():
    for policy in (Policy(), parse("")):
        profile = policy.profile("anyone", "sensors")
        assert profile.rules == () and profile.match("/x", "read") is None


def test_matching_order_patterns_and_limits():
    p = parse(POLICY)
    prof = p.profile("special-1")
    assert prof.group == "sensors" and prof.batch == 6 and prof.rate == 1000
    assert prof.match("/valves/7", "open").where == "devices.special-1.allow[0]"
    assert prof.match("/valves/8", "open") is None
    assert prof.match("/sensors/a/b", ["read", "publish"]).pattern == "/sensors/*"
    assert prof.match("/sensors/a", ["read", "delete"]) is None
    assert prof.match("/sensors/room*", "read") is not None      # a narrower pattern
    assert prof.match("/sens*", "read") is None                  # a wider one
    assert prof.match("/ota/image", 1 | 16).audience == "ota"     # GET | FETCH
    assert prof.match("/ota/image", 2) is None                   # POST
    assert prof.match("/ota/image", "GET", "other") is None
    slow = p.profile("x", "slow")
    assert (slow.batch, slow.rate, slow.burst) == (2, 0.01, 2)
    assert p.profile("x", "no-such-group").rules == ()
    assert p.knows("policy-only-1") and not p.knows("x")


def test_rule_settings_inherit_rule_then_table_then_defaults():
    p = parse("""
[defaults]
ttl = 30
[groups.g]
ttl = 45
[[groups.g.allow]]
resource = "/a"
operations = ["r"]
[[groups.g.allow]]
resource = "/b"
operations = ["r"]
ttl = 5
uses = 2
""")
    a, b = p.profile("d", "g").rules
    assert (a.ttl, a.uses, b.ttl, b.uses) == (45, 1, 5, 2)


def test_semantic_errors_name_their_lines():
    text = """\
[issuer]
max_skew = 0
hop_refs = "both"

[defaults]
ttl = -5
batch = 10
burst = 3

[nodes]
gateway = "not a key"

[groups.sensors]
colour = "red"

[[groups.sensors.allow]]
resource = "/a"
operations = ["read"]

[[groups.sensors.allow]]
resource = "/b*c"
operations = []
chain = ["nope"]

[devices."bad id"]
group = "missing"
"""
    found = {(line, path) for line, path, _ in problems(text)}
    assert found >= {
        (2, "issuer.max_skew"), (3, "issuer.hop_refs"), (6, "defaults.ttl"), (8, "defaults.burst"),
        (11, "nodes.gateway"), (14, "groups.sensors.colour"), (21, "groups.sensors.allow[1].resource"),
        (22, "groups.sensors.allow[1].operations"), (23, "groups.sensors.allow[1].chain"),
        (25, 'devices."bad id"'), (26, 'devices."bad id".group'),
    }, found


def test_array_of_tables_under_several_devices_are_located_separately():
    text = """\
[devices.a]
[[devices.a.allow]]
resource = "/x"
operations = ["r"]

[devices.b]
[[devices.b.allow]]
resource = "/y"
operations = ["r"]
[[devices.b.allow]]
resource = "/z"
operations = "r"
"""
    assert problems(text) == [(12, "devices.b.allow[1].operations", "must be a non-empty list of operation names")]


def test_syntax_errors_have_line_numbers():
    (line, _path, message), = problems("[issuer]\nname = \"x\"\n[groups\n")
    assert line == 3 and "TOML syntax" in message


def test_unknown_top_level_section_and_both_resource_forms():
    found = problems('[grups.x]\n[groups.g]\n[[groups.g.allow]]\nresource = "/a"\nresources = ["/b"]\n'
                     'operations = ["r"]\n')
    assert (1, "grups") in {(l, p) for l, p, _ in found}
    assert (3, "groups.g.allow[0]") in {(l, p) for l, p, _ in found}


def test_node_key_file_relative_to_the_policy(tmp_path):
    from crumb import SigningKey
    from crumb.keys import save

    key = SigningKey.generate()
    save(key, tmp_path / "gw.key")
    (tmp_path / "p.toml").write_text('[nodes]\ngw = { key_file = "gw.key.pub" }\n')
    assert load(tmp_path / "p.toml").nodes["gw"] == key.public


def test_policy_check_command(tmp_path):
    ok = crumb_cli("policy", "check", str(EXAMPLE))
    assert ok.returncode == 0 and "deny by default" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\nttl = 0\n")
    r = crumb_cli("policy", "check", str(bad))
    assert r.returncode == 1 and f"{bad}:2: defaults.ttl: must be an integer from 1 to 86400" in r.stderr
    assert "1 problem" in r.stderr


def test_rules_name_canonical_resources_only(tmp_path):
    """Issue 16, defect 12: a rule is for resources in canonical form (PROTOCOL.md §4.2); `policy check` says which."""
    text = """\
[groups.g]
[[groups.g.allow]]
resource = "/sensors/../valves/*"
operations = ["read"]
[[groups.g.allow]]
resources = ["/ok/*", "/a//b", "/c/", "/d%2e", "/e\\\\f", "/g\\u0000"]
operations = ["read"]
[[groups.g.allow]]
resources = ["/", "/sensors/*", "sensors/t1", "/a/.hidden", "*"]
operations = ["read"]
"""
    found = problems(text)
    assert [(line, path) for line, path, _ in found] == [(3, "groups.g.allow[0].resource")] + \
        [(6, "groups.g.allow[1].resources")] * 5, found
    reasons = " ".join(message for _, _, message in found)
    for why in ("'.' or '..' segment", "empty segment", "percent-encoding", "backslash", "control character"):
        assert why in reasons, (why, reasons)
    (tmp_path / "p.toml").write_text(text)
    r = crumb_cli("policy", "check", str(tmp_path / "p.toml"))
    assert r.returncode == 1 and "not in canonical form" in r.stderr and "6 problems" in r.stderr
