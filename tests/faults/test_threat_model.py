"""THREAT_MODEL.md names tests as evidence: each must exist, and each attacker must have some."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_test_the_threat_model_names_exists():
    text = (ROOT / "THREAT_MODEL.md").read_text()
    refs = REF.findall(text)
    assert len(refs) > 40
    missing = []
    for path, name in refs:
        source = ROOT / path
        if not source.is_file() or not re.search(rf"^(async )?def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"THREAT_MODEL.md names tests that do not exist: {missing}"


def test_each_attacker_has_evidence():
    text = (ROOT / "THREAT_MODEL.md").read_text()
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    attackers = {s.splitlines()[0]: s for s in sections}
    assert [a.split(". ", 1)[1] for a in attackers] == [
        "A stolen device", "A network attacker on the device's link", "A compromised hop",
        "A malicious insider at one service", "An attacker who can write to the issuer's disk"]
    for title, body in attackers.items():
        assert "**Can" in body and "**Cannot:**" in body, title
        assert len(REF.findall(body)) >= 3, title
