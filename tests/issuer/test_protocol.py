"""The /token wire format: bytes, MAC input, key derivation, sizes, and the hot-path encoders
checked against the general ones."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random

import pytest

from crumb import SigningKey, cbor, mint
from crumb.tooling.bench.issuer import RequestMaker
from crumb.issuer.audit import IssuedRecord, canonical, issued_body
from crumb.issuer.codes import CODES, Refusal
from crumb.issuer.minting import Minter, finish
from crumb.issuer.protocol import (
    Issued, build_json_request, build_request, derive_device_key, encode_uint, error_cbor, mac_of,
    parse_cbor_request, parse_json_request, parse_response, token_response_cbor, token_response_json,
)
from crumb.scope import ALL_METHODS

MASTER = bytes(range(32))
KEY = derive_device_key(MASTER, "dev-0001")


def test_device_key_derivation_known_answer():
    expected = hmac.new(MASTER, b"crumb device key v1" + b"dev-0001", hashlib.sha256).digest()
    assert KEY == expected
    # A fixed vector for other implementations (the device side, docs/token-endpoint)
    assert KEY.hex() == "50c6f03639c96e3736717c1c7f43048908a8a53c1cc792279acbc740bdd83231"


def test_request_bytes_exactly():
    body = build_request("dev-0001", KEY, [("/sensors/temp01", "read")], nonce=bytes(6), now=1_800_000_000)
    mac_input = bytes.fromhex("a4" "09" "82" "6f") + b"/sensors/temp01" + bytes.fromhex("64") + b"read" \
        + bytes.fromhex("1818" "68") + b"dev-0001" + bytes.fromhex("20" "46" "000000000000" "21" "1a") \
        + (1_800_000_000).to_bytes(4, "big")
    mac = hmac.new(KEY, mac_input, hashlib.sha256).digest()[:16]
    assert body == b"\xa5" + mac_input[1:] + b"\x23\x50" + mac
    req = parse_cbor_request(body)
    assert req.mac_input == mac_input and req.mac == mac and req.nonce == bytes(6)
    assert (req.client_id, req.scopes, req.time, req.count, req.batch) == \
        ("dev-0001", [("/sensors/temp01", "read")], 1_800_000_000, 1, False)


def test_device_exchange_fits_the_220_byte_budget():
    """Issue 4's bar: request + response for one token within 220 bytes with a typical token."""
    issuer = SigningKey.generate()
    token = mint(issuer, sub="dev-0001", scope=[("/sensors/temp01", "read")], ttl=60)
    request = build_request("dev-0001", KEY, [("/sensors/temp01", "read")], nonce_bytes=6)
    response = token_response_cbor([Issued(token, 60, 1, b"", ())], 1_800_000_000, False)
    assert len(token) <= 139
    assert (len(request), len(response)) == (67, len(token) + 13)
    assert len(request) + len(response) <= 220, (len(request), len(response))


def test_mac_input_is_the_canonical_request_without_the_mac():
    for scopes, kw in (([("/a", "r")], {}), ([("/a", "r"), ("/b", ["x", "y"])], {"audience": "svc"}),
                       ([("/a", 5)], {"count": 3})):
        body = build_request("dev-0001", KEY, scopes, **kw)
        m = cbor.loads(body)
        del m[-4]
        req = parse_cbor_request(body)
        assert req.mac_input == cbor.dumps(m)
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


def test_hot_path_encoders_match_the_general_encoder():
    for v in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        assert encode_uint(v) == cbor.dumps(v)
    t1, t2 = bytes(139), os.urandom(150)
    one = [Issued(t1, 60, 1, b"", ())]
    assert token_response_cbor(one, 1_800_000_000, False) == cbor.dumps({1: t1, 2: 60, -2: 1_800_000_000})
    multi = [Issued(t2, 300, 3, b"", ())]
    assert token_response_cbor(multi, 5, False) == cbor.dumps({1: t2, 2: 300, -2: 5, -6: 3})
    batch = one + multi
    assert token_response_cbor(batch, 7, True) == cbor.dumps({-2: 7, -5: [[t1, 60, 1], [t2, 300, 3]]})
    assert parse_response(token_response_cbor(batch, 7, True)).tokens == [(t1, 60, 1), (t2, 300, 3)]
    assert json.loads(token_response_json(one, 9, False))["access_token"]


def test_error_response_map():
    body = error_cbor(Refusal("rate_limited", "slow down", retry_after=3), 1_800_000_000)
    assert cbor.loads(body) == {30: 1, 31: "slow down", -2: 1_800_000_000, -7: "rate_limited", -8: 3}
    for code, (status, ace, _) in CODES.items():
        r = parse_response(error_cbor(Refusal(code, "m"), 1))
        assert (r.code, r.ace_error) == (code, ace) and 400 <= status < 600


def test_issued_record_body_equals_canonical_json():
    kw = dict(t=1_800_000_000_123, device="dév-1", scope=[("/a\"", "r"), ("/b", ["x", "y"]), ("/c", 5)],
              count=2, tokens=["00ff", "abcd"], exp=1_800_000_060, kid="0a0b0c0d", rules=["groups.g.allow[0]"],
              peer="127.0.0.1")
    record = {**kw, "scope": [list(s) for s in kw["scope"]], "auth": True, "event": "issued"}
    assert issued_body(**kw) == canonical(record).encode()
    assert issued_body(**{**kw, "peer": None}) == canonical({**record, "peer": None}).encode()
    # The issuer's per-lane template writes the same bytes.
    lane = IssuedRecord(device=kw["device"], scope=kw["scope"], count=kw["count"], kid=kw["kid"], rules=kw["rules"])
    for peer in ("127.0.0.1", None, "::1"):
        assert lane.body(t=kw["t"], exp=kw["exp"], peer=peer, tokens=kw["tokens"]) == \
            issued_body(**{**kw, "peer": peer})
        assert lane.body_one(kw["t"], kw["exp"], peer, "00ff") == issued_body(**{**kw, "peer": peer,
                                                                                   "tokens": ["00ff"]})


@pytest.mark.parametrize("shape", [
    dict(resource="/sensors/temp01", permission="read", sub="dev-0001", ttl=60),
    dict(resource="/s/*", permission=["a", "b"], sub="d", ttl=120, uses=3, iss="me", aud="ingest", hop_refs="kid"),
    dict(resource="/x", permission=5, sub=None, ttl=86_400, uses=2**32 - 1, hop_refs="key"),
])
def test_template_minting_equals_core_mint(shape):
    key = SigningKey.generate()
    nodes = [SigningKey.generate().public for _ in range(3)]
    chain = (("gw", nodes[0]), ("st", nodes[1])) if shape.get("hop_refs") else ()
    atten = (("fl", nodes[2]),) if shape.get("hop_refs") == "kid" else ()
    minter = Minter()
    for now in (1_700_000_000, 1_800_000_000, 4_000_000_000, 2**32 - 30, 70_000, 65_535, 1_000):
        token, cti = minter.mint(key, now=now, chain=chain, attenuators=atten, **shape)
        reference = mint(key, scope=[(shape["resource"], shape["permission"])], sub=shape["sub"], ttl=shape["ttl"],
                         uses=shape.get("uses", 1), iss=shape.get("iss"), aud=shape.get("aud"), chain=list(chain),
                         attenuators=list(atten), hop_refs=shape.get("hop_refs", "key"), now=now, cti=cti)
        assert token == reference
        # A lane (the issuer's per-shape cache) prepares the same bytes; finish() makes the token.
        lane = minter.lane(key, chain=chain, attenuators=atten, **shape)
        unsigned, to_sign, _ = lane.prepare(now, cti)
        assert (unsigned, to_sign, cti) == minter.prepare(key, now=now, chain=chain, attenuators=atten, cti=cti,
                                                          **shape)
        assert finish(unsigned, key.sign(to_sign)) == reference


def test_documented_request_vector():
    """The worked example in PROTOCOL.md §11.2, byte for byte."""
    key = derive_device_key(bytes(range(32)), "dev-0001")
    body = build_request("dev-0001", key, [("/sensors/temp01", "read")], nonce=bytes.fromhex("a1a2a3a4a5a6"),
                         now=1_800_000_000)
    assert body.hex() == ("a509826f2f73656e736f72732f74656d70303164726561641818686465762d303030312046a1a2a3a4a5a6"
                          "211a6b49d2002350f0bbdf1a702722d0429895c8a31f3ff2")
    assert parse_cbor_request(body).mac_input == b"\xa4" + body[1:-18]


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


def _general(data: bytes):
    from crumb.issuer import protocol

    try:
        return protocol._parse_cbor(data)
    except (Refusal, IndexError, cbor.Malformed):
        return "refused"


def _device_requests():
    """Mostly well-formed device requests, with one field at a time drawn from a wider range, sometimes
    with a flipped byte or cut short: the inputs the parsers' differential tests share."""
    from hypothesis import strategies as st

    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)
    perms = st.one_of(text, st.integers(0, 300), st.lists(st.sampled_from(["read", "write", "x"]), max_size=3))
    device_ids = st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,70}", fullmatch=True), text)

    @st.composite
    def requests(draw) -> bytes:
        wild = draw(st.sampled_from(["none", "resource", "perm", "device", "nonce", "time", "mac", "extra"]))
        resource = draw(st.one_of(text, st.text(min_size=20, max_size=300))) if wild == "resource" else \
            draw(st.sampled_from(["/sensors/t", "/a/*", "/" + "x" * 30, "/a*b", "/é/ü"]))
        perm = draw(perms) if wild == "perm" else draw(st.sampled_from(["read", "w", 1, 23, 24, 255]))
        device = draw(device_ids) if wild == "device" else draw(st.sampled_from(["dev-0001", "d", "x" * 40]))
        nonce = draw(st.binary(max_size=20)) if wild == "nonce" else draw(st.binary(min_size=6, max_size=16))
        now = draw(st.integers(0, 2**40)) if wild == "time" else 1_800_000_000
        mac = draw(st.binary(min_size=15, max_size=17)) if wild == "mac" else bytes(16)
        fields = {9: [resource, perm], 24: device, -1: nonce, -2: now, -4: mac}
        if wild == "extra":
            fields[draw(st.sampled_from([-3, 5]))] = draw(st.one_of(st.integers(0, 40), text))
        body = bytearray(cbor.dumps(fields))
        if draw(st.integers(0, 3)) == 0:  # a flipped byte
            body[draw(st.integers(0, len(body) - 1))] ^= draw(st.integers(1, 255))
        if draw(st.integers(0, 5)) == 0:
            body = body[:draw(st.integers(0, len(body)))]
        return bytes(body)

    return requests()


def _python_common(data: bytes):
    from crumb.issuer import protocol

    try:
        return protocol._parse_common(data)
    except IndexError:
        return None


def test_common_request_fast_path_agrees_with_the_general_parser():
    """The fast path answers only what the general parser answers the same way; otherwise it steps aside."""
    from hypothesis import given, settings

    from crumb.issuer import protocol

    hits = []

    @settings(max_examples=1500, deadline=None)
    @given(_device_requests())
    def check(data: bytes) -> None:
        fast = _python_common(data)
        if fast is not None:
            hits.append(1)
            assert fast == _general(data)

    check()
    # Real device requests take the fast path.
    maker = RequestMaker("bench-0001", KEY, 1)
    for _ in range(50):
        body = maker.body(1_800_000_000)
        assert protocol._parse_common(body) is not None
        assert protocol._parse_common(body) == _general(body) == parse_cbor_request(body)
    assert protocol._parse_common(build_request("dev-0001", KEY, [("/a", 5)], nonce=bytes(6), now=70_000)) == \
        _general(build_request("dev-0001", KEY, [("/a", 5)], nonce=bytes(6), now=70_000))
    assert len(hits) > 150, f"the generator produced only {len(hits)} requests the fast path takes"


def test_the_native_common_request_parser_is_built():
    from crumb.issuer import protocol

    assert protocol.NATIVE or os.environ.get("CRUMB_NATIVE_REQUEST") == "0", (
        "crumb._request is not built: the issuer would parse every request in Python. Install a C compiler and "
        "the Python headers, then `make setup` (pip install -e .) again")


def test_native_common_request_parser_agrees_with_the_python_one():
    """crumb._request.parse_common answers exactly what protocol._parse_common answers: the same TokenRequest,
    or None (the general parser then decides) where Python steps aside or would read past the end."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from crumb import _request
    from crumb.issuer import fastreq, protocol

    mask = ALL_METHODS
    native = (fastreq.load(protocol.TokenRequest, mask) or _request).parse_common  # even with CRUMB_NATIVE_REQUEST=0
    _request.init(mask, protocol.TokenRequest)
    hits = []

    def same(data: bytes) -> None:
        expected, got = _python_common(data), native(data)
        assert got == expected, data.hex()
        if got is not None:
            assert type(got) is protocol.TokenRequest and [type(x) for x in got] == [type(x) for x in expected]
            assert got.scopes[0] == expected.scopes[0] and type(got.scopes[0]) is tuple
            hits.append(1)

    @settings(max_examples=3000, deadline=None)
    @given(st.one_of(_device_requests(), st.binary(max_size=120)))
    def check(data: bytes) -> None:
        same(data)
        for cut in range(len(data)):  # every prefix: nothing reads past the end
            assert native(data[:cut]) is None or _python_common(data[:cut]) is not None

    check()
    maker = RequestMaker("bench-0001", KEY, 1)
    for _ in range(50):
        same(maker.body(1_800_000_000))
    for perm in (1, 23, 24, 31, 32, 255, "r", "x" * 255):
        same(build_request("dev-0001", KEY, [("/a/*", perm)], nonce=bytes(16), now=0xFFFFFFFF))
    same(build_request("dev-0001", KEY, [("/" + "é" * 127, "read")], nonce=bytes(6), now=70_000))
    for perm in range(0, 256):  # every one-byte method mask: known bits only
        same(cbor.dumps({9: ["/a", perm], 24: "d", -1: bytes(8), -2: 70_000, -4: bytes(16)}))
    for c in [*range(0x20, 0x7F), 0xE9, 0x80]:  # every ASCII character (and two others) in a device id
        for device in (chr(c) + "x", "x" + chr(c), "x" * 63 + chr(c)):
            same(cbor.dumps({9: ["/a", "r"], 24: device, -1: bytes(8), -2: 70_000, -4: bytes(16)}))
    body = bytearray(build_request("dev-0001", KEY, [("/a", "r")], nonce=bytes(8), now=70_000))
    at = len(body) - 18 - 4
    for small in (0, 1, 0xFFFF, 0x10000):  # time in the 4-byte form: preferred only from 65536 on
        body[at:at + 4] = small.to_bytes(4, "big")
        same(bytes(body))
    assert len(hits) > 250, f"the generator produced only {len(hits)} requests the fast path takes"
    with pytest.raises(TypeError):
        native(bytearray(b"\xa5"))


def test_parse_cbor_request_is_the_same_with_and_without_the_native_parser(monkeypatch):
    from hypothesis import given, settings

    from crumb.issuer import protocol

    def answer(data: bytes):
        try:
            return parse_cbor_request(data)
        except Refusal as r:
            return r.code, r.message

    @settings(max_examples=400, deadline=None)
    @given(_device_requests())
    def check(data: bytes) -> None:
        with_native = answer(data)
        with monkeypatch.context() as m:
            m.setattr(protocol, "_native_parse", None)
            assert answer(data) == with_native

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


def test_an_extension_that_does_not_fit_leaves_parsing_to_python():
    """crumb._request refuses a request type it cannot fill (say, built from other sources): the issuer then
    parses in Python rather than failing to start, and the parser already set up is left as it was."""
    from crumb.issuer import fastreq, protocol

    class Other(tuple):
        _fields = ("client_id",)

    assert fastreq.load(Other, ALL_METHODS) is None
    body = build_request("dev-0001", KEY, [("/a", "read")], nonce=bytes(8), now=1_800_000_000)
    if protocol._native_parse is not None:
        assert type(protocol._native_parse(body)) is protocol.TokenRequest
