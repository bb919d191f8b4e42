"""The shared vectors: every expected result holds, and the files are up to date."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crumb import Verifier
from crumb.errors import CrumbError
from crumb.keys import PublicKey
from crumb.replay import MemoryReplayStore

ROOT = Path(__file__).resolve().parents[2]
DOC = json.loads((ROOT / "shared" / "vectors" / "tokens.json").read_text())


def _key(name):
    return PublicKey(bytes.fromhex(DOC["keys"][name]["public"]))


@pytest.mark.parametrize("vector", DOC["vectors"], ids=[v["name"] for v in DOC["vectors"]])
def test_vector(vector):
    cfg, req = vector["verifier"], vector["request"]
    clock = lambda: cfg["now"]
    verifier = Verifier([_key(DOC["issuer"])], node_keys=[_key(n) for n in DOC["node_keys"]], clock=clock,
                        leeway=cfg["leeway"], hop=cfg["hop"], audience=cfg["audience"],
                        replay=MemoryReplayStore(fence=False, clock=clock, leeway=cfg["leeway"]))
    token = bytes.fromhex(vector["token"])
    result = None
    for _ in range(vector["presentations"]):
        try:
            verifier.verify(token, req["resource"], req["operation"], facts=req["facts"])
            result = "ok"
        except CrumbError as e:
            result = e.code
    assert result == vector["expect"]


def test_every_error_code_has_a_vector():
    codes = {v["expect"] for v in DOC["vectors"]}
    untested = {"revoked", "store_unavailable"}  # depend on verifier configuration, not on token bytes
    sections = json.loads((ROOT / "shared" / "wire.json").read_text(encoding="utf-8"))["sections"]
    assert set(sections["token_errors"]["constants"]["ERROR_CODES"]) - untested <= codes


def test_files_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_vectors.py"), "--check"],
                            capture_output=True, check=False, text=True)
    assert result.returncode == 0, result.stderr
