"""The one-device walkthrough (`crumb demo`) runs end to end: issuer, device client, chain, attacks, audit.

(`make demo`, the main job, is the simulator's attacker scenario: tests/sim.)"""

import subprocess
import sys


def test_demo_runs_and_every_attack_is_rejected():
    r = subprocess.run([sys.executable, "-m", "crumb.cli", "demo"], capture_output=True, check=False, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "demo complete" in out and "ACCEPTED" not in out and "Traceback" not in r.stderr
    for code in ("replayed", "chain_incomplete", "chain_invalid", "scope_denied", "bad_signature", "bad_mac"):
        assert f"rejected — {code}" in out, code
    assert "chain intact" in out
