"""The /token wire format: bytes, MAC input, key derivation, sizes and strict parsing.

The fast paths against the general implementations: test_differential.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random

import pytest

from crumb import SigningKey, cbor, mint
from crumb.issuer.codes import CODES, Refusal
from crumb.issuer.protocol import (
    Issued,
    build_json_request,
    build_request,
    derive_device_key,
    encode_uint,
    error_cbor,
    mac_of,
    parse_cbor_request,
    parse_json_request,
    parse_response,
    token_response_cbor,
    token_response_json,
)
from crumb.tooling.bench.issuer import RequestMaker

MASTER = bytes(range(32))
KEY = derive_device_key(MASTER, "dev-0001")


def test_device_key_derivation_known_answer():
    expected = hmac.new(MASTER, b"crumb device key v1" + b"dev-0001", hashlib.sha256).digest()
    assert KEY == expected
    # A fixed vector for other implementations (the device side, docs/token-endpoint)
    assert KEY.hex() == "50c6f03639c96e3736717c1c7f43048908a8a53c1cc792279acbc740bdd83231"


def test_request_bytes_exactly():
    body = build_request("dev-0001", KEY, [("/sensors/temp01", "read")], nonce=bytes(6), now=1_800_000_000)
    # {9: "/sensors/temp01|read", 24: "dev-0001", -65537: time || count || nonce || MAC}
    mac_input = bytes.fromhex("a3" "09" "74") + b"/sensors/temp01|read" + bytes.fromhex("1818" "68") + b"dev-0001" \
        + bytes.fromhex("3a00010000" "581b") + (1_800_000_000).to_bytes(4, "big") + b"\x01" + bytes(6)
    mac = hmac.new(KEY, mac_input, hashlib.sha256).digest()[:16]
    assert body == mac_input + mac
    req = parse_cbor_request(body)
    assert req.mac_input == mac_input and req.mac == mac and req.nonce == bytes(6)
    assert (req.client_id, req.scopes, req.time, req.count, req.batch) == \
        ("dev-0001", [("/sensors/temp01", "read")], 1_800_000_000, 1, False)


def test_device_exchange_fits_the_230_byte_budget():
    """Request + response for one typical token within 230 bytes, with RFC 9200's token_type and crumb's
    parameters under private-use keys (the token 140 bytes, its scope claim a byte string)."""
    issuer = SigningKey.generate()
    token = mint(issuer, sub="dev-0001", scope=[("/sensors/temp01", "read")], ttl=60)
    request = build_request("dev-0001", KEY, [("/sensors/temp01", "read")], nonce_bytes=6)
    response = token_response_cbor([Issued(token, 60, 1, b"", ())], 1_800_000_000, False)
    assert len(token) == 140
    assert (len(request), len(response)) == (68, len(token) + 20)
    assert len(request) + len(response) <= 230, (len(request), len(response))


def test_mac_input_is_the_canonical_request_without_the_mac():
    for scopes, kw in (([("/a", "r")], {}), ([("/a", "r"), ("/b", ["x", "y"])], {"audience": "svc"}),
                       ([("/a", 5)], {"count": 3})):
        body = build_request("dev-0001", KEY, scopes, **kw)
        req = parse_cbor_request(body)
        assert req.mac_input == body[:-16] and body.endswith(req.mac)  # every byte before the MAC
        assert mac_of(KEY, req.mac_input) == req.mac
        j = parse_json_request(build_json_request("dev-0001", KEY, scopes, nonce=req.nonce, now=req.time, **kw))
        assert j.mac_input == req.mac_input and j.mac == req.mac and j.scopes == req.scopes


def test_bench_request_maker_builds_real_requests():
    maker = RequestMaker("bench-0001", KEY, 8080)
    for nonce in (os.urandom(8), os.urandom(6), os.urandom(16)):
        for now in (1_800_000_000, 1_800_000_001, 70_000):
            assert maker.body(now, nonce) == build_request(
                "bench-0001", KEY, [("/bench/sensor01", "read")], nonce=nonce, now=now)
    # Its own nonces (pooled) are fresh across refills of the pool, and every request is one the issuer takes.
    nonces = set()
    for i in range(1100):
        raw = maker.request(1_800_000_000 + i // 100)
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.endswith(b"Content-Length: %d" % len(body))
        req = parse_cbor_request(body)
        assert req.time == 1_800_000_000 + i // 100 and hmac.compare_digest(mac_of(KEY, req.mac_input), req.mac)
        nonces.add(req.nonce)
    assert len(nonces) == 1100


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b"\xa6" + b[1:], "truncated"),
    (lambda b: b"\xb8\x05" + b[1:], "CBOR map"),
])
def test_strict_parse_rejections(mutate, message):
    body = build_request("dev-0001", KEY, [("/a", "r")])
    with pytest.raises(Refusal) as e:
        parse_cbor_request(mutate(body))
    assert e.value.code == "malformed"


def test_parse_never_raises_anything_but_refusal():
    rng = random.Random(7)
    base = build_request("dev-0001", KEY, [("/sensors/a", "read"), ("/b", ["x", "y"])], count=1)
    for _ in range(3000):
        body = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            body[i] = rng.randrange(256)
        try:
            parse_cbor_request(bytes(body))
        except Refusal as e:
            assert e.code == "malformed"
    for _ in range(500):
        try:
            parse_json_request(os.urandom(rng.randint(0, 40)))
        except Refusal as e:
            assert e.code == "malformed"


def test_nesting_and_sizes_are_bounded():
    deep = b"\xa1\x09" + b"\x81" * 500 + b"\x00"
    with pytest.raises(Refusal):
        parse_cbor_request(deep)
    huge = b"\xa1\x18\x18\x7b" + (2**63).to_bytes(8, "big")
    with pytest.raises(Refusal):
        parse_cbor_request(huge)
    with pytest.raises(Refusal):
        parse_json_request(b"[" * 100_000)


def test_encode_uint_is_the_general_encoder_at_every_boundary():
    for v in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        assert encode_uint(v) == cbor.dumps(v)


def test_token_response_forms():
    """The two forms, as clients read them (test_differential.py holds the bytes to cbor.dumps)."""
    t1, t2 = bytes(139), os.urandom(150)
    one, multi = [Issued(t1, 60, 1, b"", ())], [Issued(t2, 300, 3, b"", ())]
    assert parse_response(token_response_cbor(one, 1_800_000_000, False)).tokens == [(t1, 60, 1)]
    assert parse_response(token_response_cbor(multi, 5, False)).tokens == [(t2, 300, 3)]
    assert parse_response(token_response_cbor(one + multi, 7, True)).tokens == [(t1, 60, 1), (t2, 300, 3)]
    assert json.loads(token_response_json(one, 9, False))["access_token"]


def test_error_response_map():
    body = error_cbor(Refusal("rate_limited", "slow down", retry_after=3), 1_800_000_000)
    assert cbor.loads(body) == {30: 1, 31: "slow down", -65537: 1_800_000_000, -65540: "rate_limited", -65541: 3}
    for code, (status, ace, _) in CODES.items():
        r = parse_response(error_cbor(Refusal(code, "m"), 1))
        assert (r.code, r.ace_error) == (code, ace) and 400 <= status < 600


def test_documented_request_vector():
    """The worked example in PROTOCOL.md §11.2, byte for byte."""
    key = derive_device_key(bytes(range(32)), "dev-0001")
    body = build_request("dev-0001", key, [("/sensors/temp01", "read")], nonce=bytes.fromhex("a1a2a3a4a5a6"),
                         now=1_800_000_000)
    assert body.hex() == ("a309742f73656e736f72732f74656d7030317c726561641818686465762d303030313a00010000581b"
                          "6b49d20001a1a2a3a4a5a65817694a97c2e6362a6818b63ec01256")
    assert parse_cbor_request(body).mac_input == body[:-16]


def test_parser_property_only_typed_refusals():
    """Arbitrary CBOR values, and arbitrary bytes: a request or a malformed refusal, nothing else."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    leaves = st.one_of(st.integers(-2**64, 2**64 - 1), st.binary(max_size=40), st.text(max_size=40),
                       st.booleans(), st.none())
    values = st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.integers(-30, 30), inner, max_size=8)), max_leaves=20)

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(values.map(lambda v: cbor.dumps(v)), st.binary(max_size=200)))
    def check(data: bytes) -> None:
        try:
            req = parse_cbor_request(data)
        except Refusal as e:
            assert e.code == "malformed"
        else:
            assert req.mac_input and len(req.mac) == 16

    check()


def test_token_ids_are_fresh_and_not_shared_with_a_forked_child():
    from crumb.issuer import minting

    ids = [minting.new_cti() for _ in range(3000)]  # across several refills of the pool
    assert len(set(ids)) == len(ids) and all(len(i) == 8 for i in ids)
    minting.new_cti()  # the pool now holds ids
    assert minting._CTIS
    pid = os.fork()
    if pid == 0:  # the child: nothing inherited
        os._exit(0 if not minting._CTIS else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
