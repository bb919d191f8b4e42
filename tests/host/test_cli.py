"""The CLI contract, through the installed `crumb` script."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

CRUMB = shutil.which("crumb", path=str(Path(sys.executable).parent)) or "crumb"
RES, OP = "/sensors/temp01", "read"


def run(*args, stdin=None):
    return subprocess.run([CRUMB, *args], capture_output=True, check=False, text=True, input=stdin, timeout=300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    kids = {}
    for name in ("issuer", "gateway", "ingest"):
        r = run("keygen", str(d / name))
        assert r.returncode == 0, r.stderr
        kids[name] = r.stdout.strip()
    return d, kids


def test_keygen_files(keys):
    d, kids = keys
    assert len(kids["issuer"]) == 8 and int(kids["issuer"], 16) >= 0
    assert stat.S_IMODE(os.stat(d / "issuer").st_mode) == 0o600
    pub = json.loads((d / "issuer.pub").read_text())
    assert "d" not in pub and pub["kid"] == kids["issuer"] and pub["crv"] == "Ed25519"
    r = run("keygen", str(d / "issuer"))
    assert r.returncode == 2 and "exists" in r.stderr


def test_mint_attest_verify(keys):
    d, _ = keys
    r = run("mint", "--key", str(d / "issuer"), "--sub", "dev-0001", "--res", RES, "--op", OP,
            "--hop", f"gateway={d / 'gateway.pub'}", "--hop", f"ingest={d / 'ingest.pub'}")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert "=" not in token and "+" not in token and "/" not in token
    v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, "--hop", "gateway", token)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["sub"] == "dev-0001"
    r = run("attest", "--key", str(d / "gateway"), "--hop", "gateway", token)
    assert r.returncode == 0, r.stderr
    t1 = r.stdout.strip()
    v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, "--hop", "ingest", t1)
    assert v.returncode == 0 and json.loads(v.stdout)["attested_by"] == ["gateway"]
    # Skipped hop, wrong operation, already passed, wrong key, via stdin.
    cases = [
        (["--hop", "ingest", token], "chain_incomplete"),
        (["--hop", "gateway", t1], "chain_invalid"),
        (["--hop", "ingest", "-"], "chain_incomplete"),
    ]
    for extra, code in cases:
        v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, *extra,
                stdin=token if extra[-1] == "-" else None)
        assert v.returncode == 1 and v.stderr.startswith(f"error: {code}: "), v.stderr
    v = run("verify", "--pub", str(d / "gateway.pub"), "--res", RES, "--op", OP, t1)
    assert v.returncode == 1 and v.stderr.startswith("error: unknown_key: ")
    v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", "write", "--hop", "ingest", t1)
    assert v.returncode == 1 and v.stderr.startswith("error: scope_denied: ")


def test_attest_by_wrong_node(keys):
    d, _ = keys
    token = run("mint", "--key", str(d / "issuer"), "--res", RES, "--op", OP,
                "--hop", f"gateway={d / 'gateway.pub'}").stdout.strip()
    r = run("attest", "--key", str(d / "ingest"), "--hop", "gateway", token)
    assert r.returncode == 1 and r.stderr.startswith("error: chain_invalid: ")


def test_attenuate_seal_and_caveats(keys):
    d, _ = keys
    token = run("mint", "--key", str(d / "issuer"), "--res", "/data/*", "--op", "read", "--op", "write",
                "--open", "--caveat", "ge battery 20").stdout.strip()
    narrowed = run("attenuate", "--caveat", "eq operation read", token).stdout.strip()
    sealed = run("seal", narrowed).stdout.strip()
    base = ["verify", "--pub", str(d / "issuer.pub"), "--res", "/data/x", "--fact", "battery=50"]
    assert run(*base, "--op", "read", sealed).returncode == 0
    r = run(*base, "--op", "write", sealed)
    assert r.returncode == 1 and "caveat_failed" in r.stderr
    r = run("attenuate", "--caveat", "eq operation read", sealed)
    assert r.returncode == 1 and "chain_invalid" in r.stderr
    r = run("mint", "--key", str(d / "issuer"), "--res", RES, "--op", OP, "--caveat", "bogus time 1")
    assert r.returncode == 2 and "unknown predicate" in r.stderr


@pytest.mark.parametrize("garbage", ["", "x", "!!!", "gqFh", "AAAA", "ggGE" * 50, "\u00e9", "-" * 3, "a" * 20000])
def test_verify_never_tracebacks(keys, garbage):
    d, _ = keys
    r = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, "--", garbage)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = run("inspect", "--", garbage)
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_usage_errors_exit_2(keys):
    d, _ = keys
    assert run("verify", "--res", RES, "--op", OP, "x").returncode == 2
    assert run("verify", "--pub", str(d / "missing.pub"), "--res", RES, "--op", OP, "x").returncode == 2
    assert run("mint", "--key", str(d / "issuer"), "--res", RES).returncode == 2
    assert run("mint", "--key", str(d / "issuer"), "--res", RES, "--op", OP, "--hop", "nokey").returncode == 2
    assert run("mint", "--key", str(d / "issuer.pub"), "--res", RES, "--op", OP).returncode == 2
    assert run("nosuchcommand").returncode == 2


def test_inspect(keys):
    d, kids = keys
    token = run("mint", "--key", str(d / "issuer"), "--sub", "dev-0001", "--res", RES, "--op", OP,
                "--hop", f"gateway={d / 'gateway.pub'}").stdout.strip()
    token = run("attest", "--key", str(d / "gateway"), "--hop", "gateway", token).stdout.strip()
    report = json.loads(run("inspect", "--json", token).stdout)
    assert report["authority"]["kid"] == kids["issuer"]
    assert report["authority"]["claims"]["sub"] == "dev-0001"
    assert report["blocks"][0]["kind"] == "attestation" and report["blocks"][0]["hop"] == "gateway"
    text = run("inspect", token).stdout
    assert "attestation" in text and "dev-0001" in text and "verifies nothing" in text
    broken = run("inspect", "--json", token[:-10])
    assert broken.returncode == 0 and json.loads(broken.stdout)["problems"]


def test_help_is_useful():
    out = run("--help").stdout
    for cmd in ("keygen", "mint", "attest", "verify", "inspect", "bench"):
        assert cmd in out
    assert "--hop" in run("mint", "--help").stdout


def test_bench_tokens_json():
    r = run("bench", "tokens", "--json", "--rounds", "60")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for key in ("token_bytes", "verify_us", "ed25519_verify_us", "verify_ratio", "chain3_bytes",
                "chain3_verify_us", "biscuit_verify_us", "cwt_verify_us", "pop_verify_us", "pop_verify_ratio",
                "pop_verify_mean_ratio", "pop_per_token_key_verify_ratio"):
        assert result[key] > 0, key
    assert result["token_bytes"] == 140 and result["chain3_bytes"] <= 420
    assert result["pop_token_bytes"] == 245  # the same token with its cnf (PROTOCOL.md §4.4)


def test_verify_default_leeway_is_5_seconds(keys):
    """Issue 16: `crumb verify --leeway` defaulted to 30 s; a token 10 s past exp was accepted."""
    from crumb import load_signing_key, mint, to_text

    d, _ = keys
    key = load_signing_key(d / "issuer")
    now = int(time.time())
    late = to_text(mint(key, scope=[(RES, OP)], ttl=60, now=now - 70))  # expired 10 s ago
    v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, late)
    assert v.returncode == 1 and "error: expired:" in v.stderr
    v = run("verify", "--pub", str(d / "issuer.pub"), "--res", RES, "--op", OP, "--leeway", "30", late)
    assert v.returncode == 0, v.stderr
    assert "default: 5" in run("verify", "--help").stdout
