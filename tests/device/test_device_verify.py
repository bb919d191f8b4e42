"""ucrumb.verify against the host verifier, its replay set, and its heap bound.

* Differential: random valid and mutated tokens (tests/device/verify_diff.py)
  get the same verdict and code from ucrumb.verify as from crumb.Verifier:
  600 on CPython, 45 inside the MicroPython VM.
* The replay set (PROTOCOL.md §7.1): bounded, evicting expired entries first,
  then raising the floor so that an evicted token is never accepted again.
* A 64 KB heap: the verify of the heaviest shared vectors completes on the
  MicroPython unix port run with -X heapsize=64K, the device code compiled by
  mpy-cross (the WebAssembly VM's heap grows on demand and cannot bound it).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import verify_diff as vd

from crumb import mint
from ucrumb import verify as dv

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_differential_cpython():
    cases = vd.cases(11, 600)
    wrong = [(c["expect"], vd.device_verdict(c), c) for c in cases]
    wrong = [w for w in wrong if w[0] != w[1]]
    assert not wrong, wrong[:3]
    seen = Counter(c["expect"] for c in cases)
    # the generator reaches the verdicts that matter (it would pass vacuously otherwise)
    assert seen["ok"] >= 30 and len(seen) >= 11, seen


def test_differential_in_the_vm(vm, tmp_path):
    cases = vd.cases(12, 45) + _cnf_cases()
    doc = {"issuer": vd.KEYS["issuer"].public.raw.hex(), "nodes": [vd.KEYS[n].public.raw.hex() for n in vd.NODES],
           "cases": cases}
    (tmp_path / "cases.json").write_text(json.dumps(doc))
    r = vm.run_vm(file=HERE / "verify_diff_vm.py", paths=[f"{tmp_path}:/diff"], timeout=120).check()
    got = {}
    for line in r.out.splitlines():
        if line.startswith("@@R "):
            _, i, code = line.split()
            got[int(i)] = code
    assert "@@DONE" in r.out and len(got) == len(cases), r.out[-2000:]
    wrong = [(i, c["expect"], got[i]) for i, c in enumerate(cases) if got[i] != c["expect"]]
    assert not wrong, wrong
    assert len({c["expect"] for c in cases}) >= 6


# -- the replay set -------------------------------------------------------------

ISSUER = vd.KEYS["issuer"]
NOW = vd.NOW


def _token(n: int, iat: int, ttl: int = 60, uses: int = 1) -> bytes:
    return mint(ISSUER, scope=[("/valves/1", "set")], now=iat, ttl=ttl, uses=uses, aud="valve-1",
                cti=n.to_bytes(8, "big"))


def _device(clock, **kw) -> dv.Verifier:
    return dv.Verifier([ISSUER.public.raw], "valve-1", clock, leeway=5, **kw)


def _boot(v: dv.Verifier) -> dv.Verifier:
    """The first verify on a synced clock sets the floor (a refused one too)."""
    assert _code(v, b"") == "malformed"
    return v


def _code(v: dv.Verifier, token: bytes) -> str:
    try:
        v.verify(token, "/valves/1", "set")
        return "ok"
    except dv.Refused as e:
        return e.code


def test_replay_set_full_evicts_oldest_and_raises_the_floor():
    now = [NOW]
    v = _device(lambda: now[0], max_entries=4)
    assert v._floor is None
    _boot(v)
    toks = [_token(i, NOW + 10 + i) for i in range(6)]
    now[0] = NOW + 20
    for t in toks[:4]:
        assert _code(v, t) == "ok"
    assert v._floor == NOW + 5  # the first synced time + leeway
    assert _code(v, toks[4]) == "ok"  # full: the oldest (iat NOW+10) goes, the floor rises to it
    assert v._floor == NOW + 10 and len(v._seen) == 4
    assert _code(v, toks[0]) == "replayed"  # evicted, and still refused: it is under the floor
    for t in toks[1:5]:
        assert _code(v, t) == "replayed"  # still in the set
    assert _code(v, toks[5]) == "ok"
    assert len(v._seen) <= 4


def test_replay_set_drops_expired_entries_first():
    now = [NOW]
    v = _boot(_device(lambda: now[0], max_entries=2))
    short = _token(1, NOW + 10, ttl=5)
    long_ = _token(2, NOW + 11, ttl=300)
    now[0] = NOW + 12
    assert _code(v, short) == "ok" and _code(v, long_) == "ok"
    now[0] = NOW + 21  # short expired at NOW+15, + leeway 5: it can no longer be accepted anyway
    assert _code(v, _token(3, NOW + 12)) == "ok"
    assert v._floor == NOW + 5  # no eviction of a live entry, so no new floor
    assert _code(v, short) == "expired" and _code(v, long_) == "replayed"


def test_replay_set_full_of_newer_tokens_refuses_an_older_one():
    now = [NOW]
    v = _boot(_device(lambda: now[0], max_entries=2))
    now[0] = NOW + 30
    assert _code(v, _token(1, NOW + 20)) == "ok" and _code(v, _token(2, NOW + 21)) == "ok"
    older = _token(3, NOW + 19)
    assert _code(v, older) == "store_unavailable"  # evicting newer entries for it would help nobody
    assert v._floor == NOW + 5 and len(v._seen) == 2


def test_multi_use_entry_counts_its_uses():
    now = [NOW]
    v = _boot(_device(lambda: now[0]))
    now[0] = NOW + 10
    t = _token(1, NOW + 8, uses=2)
    assert [_code(v, t) for _ in range(3)] == ["ok", "ok", "replayed"]


def test_reboot_refuses_tokens_issued_before_it():
    # a used token, then a reboot (a new verifier, an empty set): refused by the floor
    now = [NOW]
    first = _boot(_device(lambda: now[0]))
    now[0] = NOW + 10
    t = _token(1, NOW + 9)
    assert _code(first, t) == "ok"
    now[0] = NOW + 12
    rebooted = _device(lambda: now[0])
    assert _code(rebooted, t) == "replayed"
    assert rebooted._floor == NOW + 12 + 5
    now[0] = NOW + 20
    assert _code(rebooted, _token(2, NOW + 17)) == "replayed"  # iat == floor: still refused
    assert _code(rebooted, _token(3, NOW + 18)) == "ok"


def test_constructor_refuses_bad_keys():
    with pytest.raises(ValueError):
        dv.Verifier([b"short"], "valve-1", lambda: NOW)
    with pytest.raises(ValueError):
        dv.Verifier([ISSUER.public.raw], "valve-1", lambda: NOW, max_entries=0)


def test_kid_is_the_hosts():
    assert dv.kid_of(ISSUER.public.raw) == ISSUER.kid


# -- a 64 KB heap ----------------------------------------------------------------

HEAVY = ("chain (key) at destination", "sealed", "open attenuation", "plain single-use", "flipped signature bit")


def test_verify_completes_in_a_64k_heap(vm, tmp_path):
    doc = json.loads((REPO / "shared" / "vectors" / "tokens.json").read_text())
    by_name = {v["name"]: v for v in doc["vectors"]}
    nodes = "".join(doc["keys"][n]["public"] for n in doc["node_keys"])
    args = [nodes] + [",".join((v["token"], v["request"]["resource"], v["request"]["operation"],
                                v["verifier"]["hop"] or "-", v["expect"]))
                      for v in (by_name[n] for n in HEAVY)]
    out = tmp_path / "mpy"
    vm.compile_tree(REPO / "device", out)
    try:
        vm.check_unix_port()
    except vm.VMUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    (tmp_path / "tokens.txt").write_text("\n".join(args) + "\n")
    args = [tmp_path / "tokens.txt"]
    r = vm.run_unix_port(HERE / "verify_heap.py", args, paths=[out], heap=64 * 1024, timeout=120)
    lines = [line.split() for line in r.out.splitlines() if line.startswith("@@V ")]
    assert r.rc == 0 and "@@DONE" in r.out, r.out + r.err
    assert len(lines) == len(HEAVY) and all(e == g for _, e, g in lines), lines
    # the bound is real: the same run in 24 KB fails
    small = vm.run_unix_port(HERE / "verify_heap.py", args, paths=[out], heap=24 * 1024, timeout=120)
    assert small.rc != 0 and "MemoryError" in small.out + small.err


def test_noncanonical_is_the_hosts():
    # the device's hand-written check against the host's regular expression (PROTOCOL.md §4.2)
    import itertools
    import random

    from crumb.scope import noncanonical as host

    alphabet = "/.;a%\\\x00\x1f\x7f*"
    words = ["".join(p) for n in range(1, 5) for p in itertools.product(alphabet, repeat=n)]
    rnd = random.Random(5)
    words += ["".join(rnd.choice(alphabet + "bc") for _ in range(rnd.randint(5, 14))) for _ in range(3000)]
    wrong = [w for w in words if dv.noncanonical(w) != (host(w) is not None)]
    assert not wrong, [repr(w) for w in wrong[:5]]


def _signed(claims: dict) -> bytes:
    """A token whose authority payload is ``claims`` as given (no validation), signed by the issuer."""
    from crumb import cbor, cose
    from crumb.token import Block, Token

    p, _, payload, sig = cose.sign(ISSUER, cose.authority_protected(ISSUER.kid), cbor.dumps(claims))
    return Token(Block(p, payload, sig), [], None).to_bytes()


def test_the_hosts_cbor_bounds_hold_on_the_device():
    # bounds the host's decoder applies before any claim is read (per container, nesting):
    # the device's decoder bounds the whole input, so verify.py applies the host's on top
    from crumb import cbor

    base = {4: NOW + 60, 6: NOW, 7: b"\x00" * 8, 9: cbor.dumps([["/valves/1", "set"]])}
    wide = {**base, **{100 + i: 0 for i in range(29)}}  # 33 entries: over 32 items in one map
    # 8 levels with the map: over the claims' depth of 7 (§2's 6, plus one for cnf, PROTOCOL.md §4.4)
    deep = {**base, 100: [[[[[[[1]]]]]]]}
    ok = {**base, 100: [[[[[1]]]]], **{200 + i: 0 for i in range(27)}}  # 32 entries, depth 6: unknown claims
    for claims, want in ((wide, "malformed"), (deep, "malformed"), (ok, "unknown_caveat")):
        token = _signed(claims)
        case = {"token": token.hex(), "presentations": 1,
                "verifier": {"now": NOW, "leeway": 5, "hop": None, "audience": None},
                "request": {"resource": "/valves/1", "operation": "set", "facts": {}}}
        assert vd.host_verdict(case) == vd.device_verdict(case) == want, claims.keys()


def _cnf_cases() -> list[dict]:
    """A PoP token attested past its first hop, its cnf as issued and broken in each way the host's
    crumb.pop.check_cnf refuses, signed by the issuer all the same: the device, which cannot read cnf,
    still checks its shape (fuzz target device_verify found it accepting these, where the host said
    malformed). A hop past the first does not read cnf, so the valid one verifies."""
    from crumb import cbor
    from crumb.pop import CnfSealer, x25519_public
    from crumb.token import _append, split
    from crumb.wire import BLOCK_ATTEST

    gw = vd.KEYS["gateway"]
    cnf = CnfSealer(x25519_public(gw.public), bytes(range(32))).cnf(bytes(16), nonce=bytes(13))
    enc = cnf[2]
    recipient = enc[3][0]
    eph = recipient[1][-1]
    broken = {
        "as-issued": enc,
        "content-alg": [b"\xa1\x01\x0b", *enc[1:]],
        "nonce-12": [enc[0], {5: bytes(12)}, *enc[2:]],
        "nonce-int": [enc[0], {5: 13}, *enc[2:]],
        "nonce-and-more": [enc[0], {5: bytes(13), 6: 0}, *enc[2:]],
        "tag-only": [*enc[:2], bytes(8), enc[3]],
        "ciphertext-text": [*enc[:2], "x" * 20, enc[3]],
        "two-recipients": [*enc[:3], [recipient, recipient]],
        "recipient-alg": [*enc[:3], [[b"\xa1\x01\x38\x19", *recipient[1:]]]],
        "recipient-ciphertext": [*enc[:3], [[*recipient[:2], b"x"]]],
        "recipient-header-more": [*enc[:3], [[recipient[0], {-1: eph, 4: b"k"}, b""]]],
        "ephemeral-kty": [*enc[:3], [[recipient[0], {-1: {**eph, 1: 2}}, b""]]],
        "ephemeral-crv": [*enc[:3], [[recipient[0], {-1: {**eph, -1: 6}}, b""]]],
        "ephemeral-x-31": [*enc[:3], [[recipient[0], {-1: {**eph, -2: bytes(31)}}, b""]]],
        "ephemeral-more": [*enc[:3], [[recipient[0], {-1: {**eph, 3: -25}}, b""]]],
    }
    minted = mint(ISSUER, scope=[("/valves/1", "set")], sub="dev-0001", now=NOW, ttl=60, cti=bytes(8),
                  chain=[("gateway", gw.public)], cnf=cnf)
    claims = cbor.loads(split(minted).authority.payload, max_depth=8)
    cases = []
    for name, value in broken.items():
        tok = split(_signed({**claims, 8: {2: value}}))
        _append(tok, gw, [BLOCK_ATTEST, 0])  # as crumb.attest, which would refuse the broken claims
        token = tok.to_bytes()
        cases.append({"name": name, "token": token.hex(), "presentations": 1,
                      "verifier": {"now": NOW, "leeway": 5, "hop": None, "audience": None},
                      "request": {"resource": "/valves/1", "operation": "set", "facts": {}}})
    for case in cases:
        case["expect"] = vd.host_verdict(case)
    return cases


def test_cnf_shape_is_the_hosts():
    cases = _cnf_cases()
    assert [c["expect"] for c in cases] == ["ok"] + ["malformed"] * (len(cases) - 1), [c["name"] for c in cases]
    wrong = [(c["name"], c["expect"], vd.device_verdict(c)) for c in cases if vd.device_verdict(c) != c["expect"]]
    assert not wrong, wrong
