"""Host and device CBOR decoders, differentially (CPython).

crumb.cbor (the verifier's and issuer's) and ucrumb.cbor (the device's) must
agree on every input: the same accept/reject verdict and, when they accept,
the same value with the same types. Inputs: random bytes, sequences of CBOR
heads (which reach far deeper than random bytes do), mutations of valid
tokens, requests and responses, and shared/vectors/cbor.json, the fixed
corpus both are held to (the device also runs it in MicroPython:
tests/device/cases/vector_cases.py).

The bounds are compared where they mean the same: nesting depth and string
length. Item counts differ on purpose (the host bounds each container, as
PROTOCOL.md §2 states; the device bounds the whole answer, to cap its heap),
so here both are set above the input's length, which no item count can reach
(each item takes at least one byte).

Hypothesis runs derandomized: the same examples on every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crumb import cbor as host_cbor
from crumb.errors import Malformed
from crumb.issuer.protocol import build_request
from ucrumb import cbor as device_cbor

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "shared" / "vectors" / "cbor.json").read_text(encoding="utf-8"))["vectors"]
TOKENS = [bytes.fromhex(v["token"]) for v in
          json.loads((REPO / "shared" / "vectors" / "tokens.json").read_text(encoding="utf-8"))["vectors"]]
WIDE = {"max_depth": 16, "max_string": 4096}
SETTINGS = settings(derandomize=True, max_examples=1500, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def host(data: bytes, max_depth: int, max_string: int) -> tuple[bool, Any]:
    try:
        return True, host_cbor.loads(data, max_depth=max_depth, max_items=len(data) + 1, max_string=max_string)
    except Malformed as e:  # the host's one rejection; anything else escaping is a bug
        return False, str(e)


def device(data: bytes, max_depth: int, max_string: int) -> tuple[bool, Any]:
    try:
        return True, device_cbor.loads(data, max_depth, len(data) + 1, max_string)
    except device_cbor.CBORError as e:  # the device's one rejection
        return False, str(e)


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types, maps in the same order (True is not 1, bytes not str)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    return a == b


def agree(data: bytes, max_depth: int = 16, max_string: int = 4096) -> None:
    h = host(data, max_depth, max_string)
    d = device(data, max_depth, max_string)
    assert h[0] == d[0], f"{data.hex()}: host {'accepts' if h[0] else 'refuses'} ({h[1]!r}), " \
                         f"device {'accepts' if d[0] else 'refuses'} ({d[1]!r})"
    if h[0]:
        assert same(h[1], d[1]), f"{data.hex()}: host decodes {h[1]!r}, device {d[1]!r}"
        # strict decoders accept only the one encoding, so it re-encodes to the input on both sides
        assert host_cbor.dumps(h[1]) == data and device_cbor.dumps(d[1]) == data, data.hex()


# -- the fixed corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector):
    data = bytes.fromhex(vector["cbor"])
    limits = vector["limits"] or WIDE
    assert host(data, limits["max_depth"], limits["max_string"])[0] == vector["ok"], "host"
    assert device(data, limits["max_depth"], limits["max_string"])[0] == vector["ok"], "device"
    agree(data, limits["max_depth"], limits["max_string"])


def test_corpus_holds_the_findings():
    # The disagreements this test found, each now a vector both sides follow.
    names = {v["name"] for v in VECTORS if not v["ok"]}
    assert {"two-byte simple value 20 (false)", "two-byte simple value 21 (true)",
            "two-byte simple value 22 (null)", "byte-string map key"} <= names


# -- random inputs ----------------------------------------------------------------------------------

# Heads of every major type with every kind of argument, plus a few raw bytes:
# sequences of these are mostly well-formed prefixes, so they reach the
# container, key-order, UTF-8 and simple-value paths that random bytes rarely do.
HEADS = st.one_of(
    st.sampled_from([bytes([mt << 5 | ai]) for mt in range(8) for ai in range(32)]),
    st.tuples(st.integers(0, 7), st.integers(24, 27), st.integers(0, 2**64 - 1)).map(
        lambda t: bytes([t[0] << 5 | t[1]]) + (t[2] % (1 << (8 << (t[1] - 24)))).to_bytes(1 << (t[1] - 24), "big")),
    st.sampled_from([b"\xf8\x14", b"\xf8\x15", b"\xf8\x16", b"\xf8\x20", b"\x61a", b"\x62\xc3\xbc", b"\x63\xed\xa0\x80",
                     b"\x41\x00", b"\x40", b"\x60", b"\x1a\x00\x01\x00\x00", b"\x1a\x00\x00\xff\xff"]),
    st.binary(min_size=1, max_size=3),
)
LIMITS = st.sampled_from([(16, 4096), (6, 255), (1, 0), (2, 1), (3, 3)])


@SETTINGS
@given(st.binary(max_size=48), LIMITS)
def test_random_bytes(data, limits):
    agree(data, *limits)


@SETTINGS
@given(st.lists(HEADS, max_size=24).map(b"".join), LIMITS)
def test_head_sequences(data, limits):
    agree(data, *limits)


# Values both encoders can write (int or text map keys: PROTOCOL.md §2).
KEYS = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=6))
VALUES = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.binary(max_size=24), st.text(max_size=12), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=16,
)


@SETTINGS
@given(VALUES)
def test_encoded_values(value):
    data = host_cbor.dumps(value)
    assert data == device_cbor.dumps(value)  # one encoding, whichever side writes it
    agree(data)


def _samples() -> list[bytes]:
    # Valid crumb bytes of every kind a decoder meets: tokens (and each block's
    # protected header and payload), a device request, issuer answers.
    out = list(TOKENS)
    for t in TOKENS:
        try:
            items = host_cbor.loads(t, max_depth=16, max_items=512, max_string=4096)
        except Malformed:
            continue
        for block in items[1:] if isinstance(items, list) else []:
            if isinstance(block, list) and len(block) == 4:
                out += [block[0], block[2]]
    out.append(build_request("dev-0001", bytes(32), [("/sensors/temp01", "read"), ("/a b", "x|y")], count=1,
                             audience="ingest", nonce=bytes(6), now=1_800_000_000))
    out.append(host_cbor.dumps({1: b"t" * 140, 2: 60, 34: 1, -65537: 1_800_000_000}))
    out.append(host_cbor.dumps({34: 1, -65537: 1_800_000_000, -65538: [[b"t" * 140, 60, 1]] * 4}))
    out.append(host_cbor.dumps({30: 2, 31: "stale", -65537: 1_800_000_000, -65540: "stale_time"}))
    return out


SAMPLES = _samples()
INTERESTING = [0x00, 0x17, 0x18, 0x1a, 0x1b, 0x1f, 0x20, 0x40, 0x5f, 0x60, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0,
               0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xff]
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(INTERESTING)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 4)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for op, where, arg in ops:
        i = where % (len(b) + 1)
        if op == "flip" and i < len(b):
            b[i] ^= 1 << arg
        elif op == "set" and i < len(b):
            b[i] = arg
        elif op == "insert":
            b[i:i] = bytes([arg])
        elif op == "delete":
            del b[i:i + arg]
        elif op == "truncate":
            del b[i:]
    return bytes(b)


@SETTINGS
@given(st.sampled_from(SAMPLES), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_valid_bytes(data, ops):
    agree(mutate(data, ops))


def test_samples_are_valid():
    # The mutation test starts from valid bytes (or it would test only rejections).
    assert len(SAMPLES) > 100
    for data in SAMPLES[-5:]:
        agree(data)
        assert host(data, 16, 4096)[0]
