"""Hostile bytes: every mutation is a typed rejection, never a crash, never an accept."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crumb import Verifier, attenuate, attenuate_open, attest, caveat, mint, seal
from crumb.errors import CrumbError, Malformed, TooLarge
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore

from .conftest import NOW, OP, RES

ISSUER = SigningKey(bytes(range(32)))
NODES = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]
HOPS = ["gateway", "ingest", "storage"]
GW = SigningKey(b"\x42" * 32)


def fresh(hop=None):
    clock = lambda: NOW
    return Verifier([ISSUER.public], node_keys=[n.public for n in NODES], hop=hop, clock=clock,
                    replay=MemoryReplayStore(fence=False, clock=clock))


def samples():
    plain = mint(ISSUER, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    chained = mint(ISSUER, sub="dev-0001", scope=[(RES, OP)], chain=list(zip(HOPS, (n.public for n in NODES))),
                   hop_refs="kid", now=NOW)
    for name, node in zip(HOPS, NODES):
        chained = attest(chained, node, name)
    fleet = mint(ISSUER, scope=[("/fleet/*", "read")], attenuators=[("gw", GW.public)], now=NOW,
                 caveats=[caveat("lt", "time", NOW + 100)])
    fleet = attenuate(fleet, GW, [caveat("eq", "resource", RES.replace("/sensors", "/fleet"))])
    opened = attenuate_open(mint(ISSUER, scope=[("/data/*", OP)], open=True, now=NOW), [caveat("eq", "resource", "/data/a")])
    return {
        "plain": (plain, RES, OP),
        "chain3": (chained, RES, OP),
        "attenuated": (fleet, RES.replace("/sensors", "/fleet"), "read"),
        "open": (opened, "/data/a", OP),
        "sealed": (seal(opened), "/data/a", OP),
    }


SAMPLES = samples()


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_is_valid(name):
    token, res, op = SAMPLES[name]
    fresh().verify(token, res, op)


@pytest.mark.parametrize("name", SAMPLES)
def test_every_single_bit_flip_is_rejected(name):
    token, res, op = SAMPLES[name]
    codes = set()
    for i in range(len(token) * 8):
        flipped = bytearray(token)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CrumbError) as e:
            fresh().verify(bytes(flipped), res, op)
        codes.add(e.value.code)
    assert {"malformed", "bad_signature"} <= codes


@pytest.mark.parametrize("name", SAMPLES)
def test_every_truncation_is_malformed(name):
    token, res, op = SAMPLES[name]
    for n in range(len(token)):
        with pytest.raises(Malformed):
            fresh().verify(token[:n], res, op)


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", b"\x80", b"\x40" * 3])
def test_trailing_bytes(extra):
    token, res, op = SAMPLES["plain"]
    with pytest.raises(Malformed, match="trailing"):
        fresh().verify(token + extra, res, op)


def test_outer_structure_one_encoding():
    token, res, op = SAMPLES["plain"]
    variants = [
        b"\x98\x02" + token[1:],               # array length in a 1-byte argument
        token[:1] + b"\x18\x01" + token[2:],   # version in a 1-byte argument
        b"\x9f" + token[1:] + b"\xff",          # indefinite outer array
        token[:2] + b"\x9f" + token[3:] + b"\xff",
    ]
    for v in variants:
        with pytest.raises(Malformed):
            fresh().verify(v, res, op)


def test_oversize_and_bombs():
    res, op = RES, OP
    for data in (b"\x82\x02" + b"\x81" * 5000, b"\x9b" + b"\xff" * 8, b"\x82\x02\x84\x5b" + b"\x7f" + b"\xff" * 7,
                 b"\x81" * 4000, b"\x82\x02\x84\x40\xa0\x5a\xff\xff\xff\xff"):
        with pytest.raises((Malformed, TooLarge)):
            fresh().verify(data, res, op)
    with pytest.raises(TooLarge):
        fresh().verify(b"\x00" * 4097, res, op)


def test_text_garbage():
    for text in ("", "not a token", "!!!!", "gqFh", "\u00e9t\u00e9", "a" * 10000):
        with pytest.raises(CrumbError):
            fresh().verify(text, RES, OP)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_any_mutation_rejected_or_identical(name, data):
    token, res, op = SAMPLES[name]
    reference = fresh().verify(token, res, op).to_json()
    mutated = bytearray(token)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["set", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(mutated) - 1)) if mutated else 0
        if kind == "set" and mutated:
            mutated[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            mutated[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif mutated:
            del mutated[pos:pos + data.draw(st.integers(1, 8))]
    try:
        result = fresh().verify(bytes(mutated), res, op)
    except CrumbError:
        return
    assert result.to_json() == reference  # only a byte-identical token can pass
    assert bytes(mutated) == token


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_typed_errors(data):
    with pytest.raises(CrumbError):
        fresh().verify(data, RES, OP)
