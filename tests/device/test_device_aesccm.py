"""ucrumb.aesccm with each of its three block-cipher backends.

On CPython: the pure-Python AES, and the cryptolib path through
tests/device/standin_cryptolib.py injected as ``cryptolib`` and, separately,
as ``ucryptolib`` (the pre-1.20 name); each against the published vectors
(RFC 3610, NIST SP 800-38C appendix C including the 64 KiB example 4, the
cose-wg alg 10 example) and differentially against ``cryptography``'s AESCCM.
The stand-in is held to the real module: the same probe runs on the unix
port's cryptolib and on it, line for line. On the unix port (real
MicroPython with cryptolib) the shared cases run with its real cryptolib;
the WebAssembly VM (pure path) runs them through test_device_cases.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import standin_cryptolib
from cases import aesccm_cases, h
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOURCE = REPO / "device" / "ucrumb" / "aesccm.py"
BACKENDS = ("python", "cryptolib", "ucryptolib")


def load(backend: str) -> ModuleType:
    """A fresh copy of ucrumb.aesccm that found only ``backend`` at import."""
    names = ("cryptolib", "ucryptolib")
    saved = {n: sys.modules.get(n) for n in names}
    present = {n: n in sys.modules for n in names}
    for n in names:  # None in sys.modules: `import n` raises ImportError
        sys.modules[n] = standin_cryptolib if n == backend else None  # type: ignore[assignment]
    try:
        spec = importlib.util.spec_from_file_location(f"aesccm_{backend}", SOURCE)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for n in names:
            if present[n]:
                sys.modules[n] = saved[n]  # type: ignore[assignment]
            else:
                del sys.modules[n]
    return mod


@pytest.fixture(scope="module", params=BACKENDS)
def ccm(request) -> ModuleType:
    mod = load(request.param)
    assert mod.backend() == request.param
    assert mod._aes is (None if request.param == "python" else standin_cryptolib.aes)
    return mod


def test_rfc3610(ccm):
    for n, key, nonce, aad, msg, want, m in aesccm_cases.rfc3610_vectors():
        assert ccm.ccm_encrypt(key, nonce, msg, aad, m) == want, n
        assert ccm.ccm_decrypt(key, nonce, want, aad, m) == msg, n


def test_nist_sp800_38c(ccm):
    key = h(aesccm_cases.NIST_KEY)
    for nonce, aad, msg, want, m in aesccm_cases.NIST_38C:
        assert ccm.ccm_encrypt(key, h(nonce), h(msg), h(aad), m) == h(want)
    # Example 4: 13-byte nonce (L = 2), 14-byte tag, 65,536 bytes of associated
    # data (0x00..0xff repeated): the 0xFFFE length form of RFC 3610 2.2.
    nonce, aad = h("101112131415161718191A1B1C"), bytes(range(256)) * 256
    msg = h("202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F")
    want = h("69915DAD1E84C6376A68C2967E4DAB615AE0FD1FAEC44CC484828529463CCF72"
             "B4AC6BEC93E8598E7F0DADBCEA5B")
    assert ccm.ccm_encrypt(key, nonce, msg, aad, 14) == want
    assert ccm.ccm_decrypt(key, nonce, want, aad, 14) == msg
    with pytest.raises(ValueError):
        ccm.ccm_decrypt(key, nonce, want, aad[:-1] + b"\x00", 14)


def test_cose_alg10(ccm):
    key, nonce, aad, msg, want = aesccm_cases.COSE_ALG10
    assert ccm.ccm_encrypt(h(key), h(nonce), msg, h(aad)) == h(want)


@pytest.mark.parametrize("case", sorted(n for n in dir(aesccm_cases) if n.startswith("test_")))
def test_shared_cases(ccm, case, monkeypatch):
    # the shared cases (written for every runtime) against this backend's module
    for name in ("ccm_encrypt", "ccm_decrypt"):
        monkeypatch.setattr(aesccm_cases, name, getattr(ccm, name))
    monkeypatch.setattr(aesccm_cases, "aesccm", ccm)
    getattr(aesccm_cases, case)()


@st.composite
def ccm_inputs(draw):
    nonce_len = draw(st.integers(7, 13))
    return (draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=nonce_len, max_size=nonce_len)),
            draw(st.binary(max_size=80)), draw(st.binary(max_size=40)), draw(st.sampled_from(range(4, 17, 2))),
            draw(st.integers(0, 10**6)))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ccm_inputs())
def test_differential_against_cryptography(ccm, args):
    key, nonce, msg, aad, m, flip = args
    want = AESCCM(key, tag_length=m).encrypt(nonce, msg, aad)
    assert ccm.ccm_encrypt(key, nonce, msg, aad, m) == want
    assert ccm.ccm_decrypt(key, nonce, want, aad, m) == msg
    bad = bytearray(want)
    bad[flip % len(bad)] ^= 1 << (flip % 8)
    with pytest.raises(ValueError):
        ccm.ccm_decrypt(key, nonce, bytes(bad), aad, m)


def test_failed_decrypt_releases_nothing(ccm, monkeypatch):
    # a wrong tag raises before any plaintext leaves; the buffer is zeroed
    key, nonce, aad, msg, want = aesccm_cases.COSE_ALG10
    seen = []

    class Spy(bytearray):  # records the output buffer _ccm allocates
        def __init__(self, *a):
            super().__init__(*a)
            seen.append(self)

    monkeypatch.setitem(ccm.__dict__, "bytearray", Spy)
    bad = h(want)[:-1] + b"\x00"
    with pytest.raises(ValueError, match="authentication"):
        ccm.ccm_decrypt(h(key), h(nonce), bad, h(aad))
    outs = [b for b in seen if len(b) == len(msg)]
    assert outs and all(b == bytes(len(msg)) for b in outs)


def test_standin_matches_real_unix_port_cryptolib(vm):
    # the probe's lines on the real module (MicroPython 1.25 unix port) and on the stand-in
    import cryptolib_probe

    try:
        vm.check_unix_port()
    except vm.VMUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    r = vm.run_unix_port(HERE / "cryptolib_probe.py").check()
    real = r.out.splitlines()
    assert len(real) > 40
    assert cryptolib_probe.probe(standin_cryptolib) == real


def test_unix_port_cases_on_real_cryptolib(vm, tmp_path):
    from test_device_cases import _parse

    try:
        vm.check_unix_port()
    except vm.VMUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    r = vm.run_unix_port(HERE / "vm_harness.py", ["aesccm_cases"], paths=[REPO / "device", HERE])
    results, done = _parse(r.out)
    assert done and r.rc == 0, r.out[-3000:] + r.err[-3000:]
    cases = sorted(n for n in dir(aesccm_cases) if n.startswith("test_"))
    assert sorted(k.split(".", 1)[1] for k in results) == cases
    failed = {k: v for k, v in results.items() if v[0] != "OK"}
    assert not failed, failed
    probe = tmp_path / "backend.py"  # the port has cryptolib, so aesccm must have taken it
    probe.write_text("from ucrumb import aesccm; print(aesccm.backend())")
    assert vm.run_unix_port(probe, paths=[REPO / "device"]).check().out.split() == ["cryptolib"]
