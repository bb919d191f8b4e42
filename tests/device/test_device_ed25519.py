"""ucrumb.ed25519 against libsodium (pynacl), the verifier the host uses (CPython).

Random keys and messages, then the inputs where Ed25519 implementations
differ: non-canonical S (S >= L), small-order and non-canonical R and A,
and mixed-order A and R (a point plus an 8-torsion point), where a cofactored
and a cofactorless check disagree. The device must accept exactly what
libsodium accepts, so a device and a service never disagree on a token.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from ucrumb import ed25519 as E
from ucrumb import sha512 as S


def sodium(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        crypto_sign_open(signature + message, public)
        return True
    except (BadSignatureError, ValueError):
        return False


def _point(enc: bytes) -> tuple:
    pt = E._decode(enc)
    assert pt is not None
    return pt


def _add(p: tuple, q: tuple) -> bytes:
    X, Y, Z, _T = E._add_ext(*p, *q)
    return E._encode(X, Y, Z)


def _sign_raw(a: int, public: bytes, r: int, message: bytes) -> bytes:
    """A signature from scalars: R = [r]B, S = r + H(R || public || M) a (mod L)."""
    R = E._encode(*E._scalarmult(r, 0, None))
    k = int.from_bytes(hashlib.sha512(R + public + message).digest(), "little") % E.L
    return R + ((r + k * a) % E.L).to_bytes(32, "little")


def _secret(seed: bytes) -> int:
    h = hashlib.sha512(seed).digest()
    return (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)


@settings(max_examples=40, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300), flip=st.integers(0, 64 * 8 + 31))
def test_random_keys_and_messages(seed, message, flip):
    sk = SigningKey(seed)
    public = bytes(sk.verify_key)
    sig = sk.sign(message).signature
    assert E.public_key(seed) == public
    assert E.verify(public, message, sig) and sodium(public, message, sig)
    # one bit flipped in the signature or the key: the same verdict as libsodium (refused)
    blob = bytearray(sig + public)
    blob[flip // 8] ^= 1 << (flip % 8)
    s2, p2 = bytes(blob[:64]), bytes(blob[64:])
    assert E.verify(p2, message, s2) == sodium(p2, message, s2)


def test_sha512_pure_matches_hashlib():
    for n in (0, 1, 55, 111, 112, 113, 127, 128, 129, 255, 256, 1000, 5000):
        m = os.urandom(n)
        assert S.sha512(m) == hashlib.sha512(m).digest(), n


def test_sha512_million_a():
    # FIPS 180-4 / NIST: one million 'a' (CPython only: 7,813 blocks)
    assert S.sha512(b"a" * 1_000_000).hex() == (
        "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
        "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b")


def test_non_canonical_s_as_libsodium():
    sk = SigningKey(b"\x07" * 32)
    public = bytes(sk.verify_key)
    for msg in (b"", b"m", b"crumb"):
        sig = sk.sign(msg).signature
        s = int.from_bytes(sig[32:], "little")
        for bad in (s + E.L, s + 2 * E.L, E.L, (1 << 256) - 1):
            if bad < 1 << 256:
                forged = sig[:32] + bad.to_bytes(32, "little")
                assert not E.verify(public, msg, forged)
                assert not sodium(public, msg, forged)


def test_small_order_encodings_as_libsodium():
    # each is of small order and is refused as R and as A, with either sign bit
    identity = (0, 1, 1, 0)
    for y in E._SMALL:
        if y < E.P:
            pt = E._decode(y.to_bytes(32, "little")) or E._decode((y | 1 << 255).to_bytes(32, "little"))
            if pt is not None:
                X, Y, Z = E._scalarmult(0, 8, pt)
                assert E._encode(X, Y, Z) == E._encode(*identity[:3]), hex(y)  # [8]P = identity
    sk = SigningKey(b"\x09" * 32)
    public = bytes(sk.verify_key)
    sig = sk.sign(b"x").signature
    for y in E._SMALL:
        for sign in (0, 1 << 255):
            enc = (y | sign).to_bytes(32, "little")
            assert not E.verify(enc, b"x", sig) and not sodium(enc, b"x", sig)
            assert not E.verify(public, b"x", enc + sig[32:]) and not sodium(public, b"x", enc + sig[32:])


def test_non_canonical_a_as_libsodium():
    # y in [p, 2**255): every non-canonical y, both signs, refused by both
    sig = SigningKey(b"\x0b" * 32).sign(b"x").signature
    for y in range(E.P, 1 << 255):
        for sign in (0, 1 << 255):
            enc = (y | sign).to_bytes(32, "little")
            assert E.verify(enc, b"x", sig) == sodium(enc, b"x", sig) is False


def test_mixed_order_key_is_judged_cofactorless_as_libsodium():
    # A' = A + T (T of order 8): a signature made with A's secret verifies under
    # the cofactorless equation only when the challenge k is a multiple of 8.
    seed = b"\x0d" * 32
    a = _secret(seed)
    A = _point(E.public_key(seed))
    T = _point(E._SMALL[5].to_bytes(32, "little"))
    mixed = _add(A, T)
    verdicts = []
    for i in range(48):
        msg = b"m%d" % i
        sig = _sign_raw(a, mixed, 1000 + i, msg)
        mine, theirs = E.verify(mixed, msg, sig), sodium(mixed, msg, sig)
        assert mine == theirs, i
        verdicts.append(mine)
    assert any(verdicts) and not all(verdicts)  # both branches were reached


def test_mixed_order_r_as_libsodium():
    seed = b"\x0f" * 32
    a = _secret(seed)
    public = E.public_key(seed)
    T = _point(E._SMALL[5].to_bytes(32, "little"))
    for i in range(8):
        msg = b"r%d" % i
        r = 77 + i
        R = _add(_point(E._encode(*E._scalarmult(r, 0, None))), T)
        k = int.from_bytes(hashlib.sha512(R + public + msg).digest(), "little") % E.L
        sig = R + ((r + k * a) % E.L).to_bytes(32, "little")
        assert E.verify(public, msg, sig) == sodium(public, msg, sig) is False


@pytest.mark.parametrize("native", [lambda p, m, s: True, lambda p, m, s: False])
def test_native_hook_is_used(monkeypatch, native):
    monkeypatch.setattr(E, "NATIVE", native)
    assert E.verify(b"\x00" * 32, b"", b"\x00" * 64) is native(0, 0, 0)


def test_small_order_forgeries_refused():
    # what the blocklist stops: with A the identity, R = [s]B and S = s verify under the
    # bare equation; with R the identity, S = k a does. Both refused, as libsodium does.
    one = (1).to_bytes(32, "little")
    s = 12345
    forged = E._encode(*E._scalarmult(s, 0, None)) + s.to_bytes(32, "little")
    assert not E.verify(one, b"x", forged) and not sodium(one, b"x", forged)
    seed = b"\x11" * 32
    public = E.public_key(seed)
    k = int.from_bytes(hashlib.sha512(one + public + b"x").digest(), "little") % E.L
    forged = one + (k * _secret(seed) % E.L).to_bytes(32, "little")
    assert not E.verify(public, b"x", forged) and not sodium(public, b"x", forged)
    E_small, E._SMALL = E._SMALL, ()  # the equation alone accepts both: the blocklist is what refuses
    try:
        assert E.verify(public, b"x", forged)
    finally:
        E._SMALL = E_small
