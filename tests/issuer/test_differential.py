"""Every fast path the issuer has, held to the general implementation it stands for, on random inputs.

Whatever writes wire or log bytes has at most two implementations: the
general one and one fast path. Here each fast path meets its general one:

  request parsing   protocol._parse_common      vs protocol._parse_cbor (every prefix of every request too)
  token bytes       minting.MintLane + finish   vs crumb.token.mint
  audit record      audit.IssuedRecord.body_one vs audit.canonical() of the record's dict
  token response    protocol.token_response_cbor vs cbor.dumps of the same map
  device MAC        protocol.DeviceMacs          vs protocol.mac_of
  the issuer        Issuer._mint_one (lanes)     vs Issuer._mint_many (the path of every other request)

Inputs include odd strings: quotes, backslashes, control characters,
non-ASCII, lone surrogates (as str where a str can hold one, as their
invalid UTF-8 bytes in a request). Where the general implementation
refuses an input, the fast path must refuse it too (or, for the parser,
step aside so that the general one decides).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crumb import SigningKey, cbor, mint
from crumb.issuer import minting, protocol
from crumb.issuer.audit import IssuedRecord, canonical
from crumb.issuer.codes import Refusal
from crumb.issuer.minting import Minter, finish
from crumb.issuer.protocol import (
    DeviceMacs,
    Issued,
    TokenRequest,
    derive_device_key,
    mac_of,
    token_response_cbor,
)
from crumb.tooling.bench.issuer import RequestMaker

MASTER = bytes(range(32))
KEY = derive_device_key(MASTER, "dev-0001")
SIGNER = SigningKey(bytes(range(100, 132)))
NODES = [SigningKey(bytes([i]) * 32).public for i in (7, 8, 9)]

# Characters that break naive writers: JSON's escapes, CBOR's multi-byte UTF-8, lone surrogates.
ODD = ['"', "\\", "\x00", "\x01", "\x1f", "\x7f", "\n", "\t", "\u2028", "\u00e9", "\u20ac", "\U0001f600", "/", "*",
       "\ud800", "\udfff"]


def odd_text(min_size: int = 0, max_size: int = 20, surrogates: bool = True) -> st.SearchStrategy[str]:
    odd = ODD if surrogates else [c for c in ODD if not 0xD800 <= ord(c) <= 0xDFFF]
    return st.lists(st.one_of(st.sampled_from(odd), st.characters()), min_size=min_size,
                    max_size=max_size).map("".join)


def outcome(fn) -> tuple:
    """("ok", value) or ("raised", the exception's type): what an implementation did with an input."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 -- compared, never swallowed: both sides must do the same
        return "raised", type(e)


# -- request parsing -------------------------------------------------------------------------


def _tstr(raw: bytes) -> bytes:
    head = cbor.dumps(raw)  # a byte string's preferred head, then the same head as a text string
    return bytes((head[0] + 0x20,)) + head[1:]


def _text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes its (invalid) UTF-8 bytes


@st.composite
def device_requests(draw) -> bytes:
    """Device requests written byte by byte: mostly the common shape, one field at a time drawn wide
    (odd text, other lengths and forms), sometimes with another field, a flipped byte or cut short."""
    wild = draw(st.sampled_from(["none", "none", "resource", "op", "device", "nonce", "count", "time", "extra",
                                 "batch", "aif", "form"]))
    resource = _text_bytes(draw(odd_text(0, 40))) if wild == "resource" else \
        draw(st.sampled_from([b"/sensors/t", b"/a/*", b"/" + b"x" * 30, b"/a*b", "/é/ü".encode(), b"/" + b"y" * 240])
             if draw(st.integers(0, 3)) else st.sampled_from([
                 # a text scope of at most 255 bytes whose AIF may not fit a token's 255 (§4.1)
                 b"/" + b"y" * 245, b"/" + b"y" * 248, "/é".encode() * 80,
                 # not in canonical form (§4.2)
                 b"/sensors/../v", b"/a//b", b"/a/", b"/a%2e", b"/a\\b", b"/a\tb"]))
    op = _text_bytes(draw(odd_text(0, 30))) if wild == "op" else \
        draw(st.sampled_from([b"read", b"w", b"r,w", b"GET", b"x" * 200]))
    device = _text_bytes(draw(st.one_of(odd_text(0, 70), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,70}",
                                                                       fullmatch=True)))) \
        if wild == "device" else draw(st.sampled_from([b"dev-0001", b"d", b"x" * 64]))
    nonce = draw(st.binary(max_size=20)) if wild == "nonce" else \
        draw(st.sampled_from([6, 6, 6, 8, 16]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    count = draw(st.integers(0, 40)) if wild == "count" else 1
    now = draw(st.integers(0, 2**32 - 1)) if wild == "time" else 1_800_000_000
    mac = draw(st.binary(min_size=16, max_size=16))
    scope = _tstr(resource + b"|" + op)
    if wild == "batch":
        scope = _tstr(resource + b"|" + op + b" /b|x")
    elif wild == "aif":
        scope = cbor.dumps(cbor.dumps([[resource.decode("utf-8", "replace"), op.decode("utf-8", "replace")]]))
    block = now.to_bytes(4, "big") + bytes((count,)) + nonce + mac
    block_head = cbor.bstr_head(len(block))
    if wild == "form":  # the block's head in a non-preferred form
        block_head = draw(st.sampled_from([b"\x59\x00" + bytes((len(block),)), b"\x5a\x00\x00\x00" + bytes((len(block),))]))
    fields = [(b"\x09", scope), (b"\x18\x18", _tstr(device)), (b"\x3a\x00\x01\x00\x00", block_head + block)]
    if wild == "extra":
        key = draw(st.sampled_from([b"\x05", b"\x18\x21", b"\x18\x26", b"\x22", b"\x09", b"\x3a\x00\x01\x00\x01"]))
        value = draw(st.one_of(st.integers(0, 40).map(cbor.dumps), odd_text(0, 10, surrogates=False).map(cbor.dumps),
                               st.just(b"\xf6")))
        fields.insert(draw(st.integers(0, len(fields))), (key, value))
    body = bytearray(bytes((0xA0 | len(fields),)) + b"".join(k + v for k, v in fields))
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.integers(0, len(body) - 1))] ^= draw(st.integers(1, 255))
    return bytes(body)


def _fast_parse(data: bytes):
    try:
        return protocol._parse_common(data)
    except IndexError:  # read past the end: parse_cbor_request hands it to the general parser
        return None


def _general_parse(data: bytes):
    try:
        return protocol._parse_cbor(data)
    except (Refusal, IndexError, cbor.Malformed) as e:
        return ("refused", type(e).__name__)


def _same_request(data: bytes) -> bool:
    """The fast path's answer is the general parser's, or it steps aside; True if it answered."""
    fast = _fast_parse(data)
    if fast is None:
        return False
    general = _general_parse(data)
    assert fast == general, data.hex()
    assert [type(x) for x in fast] == [type(x) for x in general], data.hex()
    assert [type(s) for s in fast.scopes] == [type(s) for s in general.scopes] == [tuple]
    return True


def test_request_fast_path_is_the_general_parser_on_every_request_and_every_prefix():
    hits = []

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(device_requests())
    def check(data: bytes) -> None:
        if _same_request(data):
            hits.append(data)
        for cut in range(len(data)):  # every prefix: the fast path never answers for a truncated request
            _same_request(data[:cut])

    check()
    # Real device requests take the fast path (so the comparison above is not vacuous).
    maker = RequestMaker("bench-0001", KEY, 1)
    for _ in range(20):
        body = maker.body(1_800_000_000)
        assert _same_request(body) and protocol.parse_cbor_request(body) == _general_parse(body)
    for perm in ("r", "x" * 200, 'q"\\\n\x00é€😀'):
        assert _same_request(protocol.build_request("dev-0001", KEY, [("/a/*", perm)], nonce=bytes(6),
                                                    now=0xFFFFFFFF))
    # At the edge of a token's scope claim (255 bytes of AIF): the fast path answers what fits,
    # and steps aside for what does not, which the general parser refuses.
    edge = "/" + "y" * 248
    assert _same_request(protocol.build_request("dev-0001", KEY, [(edge, "w")], nonce=bytes(6)))
    too_big = protocol.build_request("dev-0001", KEY, [(edge, "read")], nonce=bytes(6))
    assert _fast_parse(too_big) is None and _general_parse(too_big) == ("refused", "Refusal")
    # and what it leaves to the general parser, the general parser takes
    for body in (protocol.build_request("dev-0001", KEY, [("/a/*", 5)], nonce=bytes(6)),
                 protocol.build_request("dev-0001", KEY, [("/a", "r")], nonce=bytes(16)),
                 protocol.build_request("dev-0001", KEY, [("/a", "r")], count=2, nonce=bytes(6))):
        assert not _same_request(body) and isinstance(_general_parse(body), TokenRequest)
    assert len(hits) > 100, f"only {len(hits)} generated requests took the fast path"


# -- token bytes -----------------------------------------------------------------------------


@st.composite
def token_shapes(draw) -> dict:
    """Shapes a policy could give (odd text included), with one field at a time drawn from a wider range."""
    sane = odd_text(1, 12, surrogates=False).map(lambda t: t.replace("*", ""))
    wide = odd_text(0, 30)
    wild = draw(st.sampled_from(["none", "none", "resource", "perm", "text", "ttl", "uses", "parties"]))
    resource = draw(st.one_of(wide, wide.map(lambda t: "/" + t + "*"))) if wild == "resource" else \
        draw(st.one_of(sane.map(lambda t: "/" + t), sane.map(lambda t: "/" + t + "/*")))
    perm = draw(st.one_of(wide, st.integers(-1, 200), st.lists(wide, min_size=1, max_size=4))) if wild == "perm" \
        else draw(st.one_of(sane, st.integers(1, 127), st.lists(sane, min_size=2, max_size=4, unique=True)))
    text = st.one_of(st.none(), wide if wild == "text" else sane)
    names = wide if wild == "parties" else sane
    parties = st.lists(st.tuples(names, st.sampled_from(NODES)), max_size=3)
    return {"resource": resource, "permission": perm, "sub": draw(text), "iss": draw(text), "aud": draw(text),
                "ttl": draw(st.integers(-1, 2**33) if wild == "ttl" else st.sampled_from([1, 60, 86_400, 2**31])),
                "uses": draw(st.one_of(st.integers(-1, 2**33), st.just(2**64)) if wild == "uses"
                          else st.sampled_from([1, 1, 2, 24, 2**32 - 1])),
                "chain": tuple(draw(parties)), "attenuators": tuple(draw(parties)),
                "hop_refs": draw(st.sampled_from(["key", "kid"]))}


def test_token_fast_path_is_crumb_token_mint():
    made = []

    @settings(max_examples=600, deadline=None)
    @given(token_shapes(), st.one_of(st.integers(0, 2**34), st.sampled_from([65_535, 65_536, 2**32 - 61])),
           st.binary(min_size=8, max_size=8))
    def check(shape: dict, now: int, cti: bytes) -> None:
        def fast() -> bytes:
            unsigned, to_sign, got_cti = Minter().lane(SIGNER, **shape).prepare(now, cti)
            assert got_cti == cti
            assert (unsigned, to_sign, cti) == Minter().prepare(SIGNER, now=now, cti=cti, **shape)
            return finish(unsigned, SIGNER.sign(to_sign))

        def general() -> bytes:
            return mint(SIGNER, scope=[(shape["resource"], shape["permission"])], sub=shape["sub"],
                        ttl=shape["ttl"], uses=shape["uses"], iss=shape["iss"], aud=shape["aud"],
                        chain=list(shape["chain"]), attenuators=list(shape["attenuators"]),
                        hop_refs=shape["hop_refs"], now=now, cti=cti)

        got, expected = outcome(fast), outcome(general)
        assert got == expected, shape
        if got[0] == "ok":
            made.append(1)

    check()
    assert len(made) > 300, f"only {len(made)} shapes made a token"


# -- the audit record ------------------------------------------------------------------------


def test_audit_record_fast_path_is_canonical_json():
    written = []
    perms = st.one_of(odd_text(0, 10), st.integers(0, 2**70), st.lists(odd_text(0, 6), min_size=2, max_size=4))

    @settings(max_examples=1500, deadline=None)
    @given(device=odd_text(0, 30), scope=st.lists(st.tuples(odd_text(0, 30), perms), min_size=1, max_size=3),
           count=st.integers(1, 32), kid=st.one_of(st.binary(min_size=4, max_size=4).map(bytes.hex), odd_text()),
           rules=st.lists(odd_text(0, 30), min_size=1, max_size=3), t=st.integers(0, 2**53),
           exp=st.integers(-2**40, 2**64), peer=st.one_of(st.none(), odd_text(0, 40)),
           cti=st.binary(min_size=8, max_size=8))
    def check(device, scope, count, kid, rules, t, exp, peer, cti) -> None:
        def fast() -> bytes:
            return IssuedRecord(device=device, scope=scope, count=count, kid=kid, rules=rules) \
                .body_one(t, exp, peer, cti.hex())

        def general() -> bytes:
            return canonical({"t": t, "event": "issued", "device": device, "auth": True,
                              "scope": [list(s) for s in scope], "count": count, "tokens": [cti.hex()],
                              "exp": exp, "kid": kid, "rules": rules, "peer": peer}).encode("utf-8")

        got, expected = outcome(fast), outcome(general)
        assert got == expected
        if got[0] == "ok":
            written.append(1)

    check()
    assert len(written) > 300, f"only {len(written)} records were written"


# -- the token response ----------------------------------------------------------------------


def _response_map(issued: list[Issued], now: int, batch: bool) -> dict:
    # keys from PROTOCOL.md §11.5, written out here rather than taken from the code under test
    if batch:
        return {34: 1, -65537: now, -65538: [[it.token, it.expires_in, it.uses] for it in issued]}
    it = issued[0]
    m = {1: it.token, 2: it.expires_in, 34: 1, -65537: now}
    if it.uses != 1:
        m[-65539] = it.uses
    return m


def test_token_response_fast_path_is_cbor_dumps():
    u64 = st.integers(0, 2**64 - 1)
    edges = st.sampled_from([0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1])
    items = st.builds(Issued, token=st.binary(max_size=300), expires_in=st.one_of(u64, edges),
                      uses=st.one_of(st.just(1), st.just(2), u64, edges), cti=st.just(b""), scope=st.just(()))
    forms = set()

    @settings(max_examples=1000, deadline=None)
    @given(st.integers(1, 32).flatmap(lambda n: st.lists(items, min_size=n, max_size=n)), st.one_of(u64, edges),
           st.booleans())
    def check(issued: list[Issued], now: int, batch: bool) -> None:
        if not batch:
            issued = issued[:1]
        assert token_response_cbor(issued, now, batch) == cbor.dumps(_response_map(issued, now, batch))
        forms.add((batch, issued[0].uses == 1 if not batch else len(issued) >= 24))

    check()
    # single with uses 1 and with uses > 1; batches of fewer than 24 and of 24 to 32 tokens
    assert forms == {(False, True), (False, False), (True, False), (True, True)}, forms


# -- the device MAC --------------------------------------------------------------------------


def test_device_macs_are_mac_of_the_derived_key():
    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=64), st.lists(st.tuples(
        st.sampled_from(["dev-1", "dev-2", "d", "x" * 64]), st.binary(max_size=300)), min_size=1, max_size=8),
        st.integers(0, 127))
    def check(master: bytes, calls: list, bit: int) -> None:
        macs = DeviceMacs(master, max_entries=2)  # small: entries are dropped and rebuilt on the way
        for device, message in calls:
            expected = mac_of(derive_device_key(master, device), message)
            assert macs.mac(device, message) == expected
            assert macs.verify(device, message, expected)
            flipped = bytearray(expected)
            flipped[bit // 8] ^= 1 << (bit % 8)
            assert not macs.verify(device, message, bytes(flipped))
            assert not macs.verify(device, message, expected[:15]) and not macs.verify(device, message, b"")
            assert not macs.verify(device + "x", message, expected)
        assert len(macs._states) <= 2

    check()


# -- the issuer: a lane's token and record against the general path ----------------------------


def test_the_issuers_lane_path_mints_and_records_what_its_general_path_does(tmp_path, monkeypatch):
    """Issuer._mint_one (the lanes' templates) against Issuer._mint_many (every other request) for the
    same single-token request: the same unsigned token, signing input, ttl, uses, scope and audit record."""
    from crumb.issuer.app import Settings, build_issuer
    from crumb.issuer.datadir import DataDir

    from .policies import POLICY

    (tmp_path / "p.toml").write_text(POLICY)
    issuer = build_issuer(Settings(DataDir(tmp_path / "data"), tmp_path / "p.toml"))
    issuer.registry.add("dev-a", "sensors")
    profile = issuer.profile("dev-a", "sensors")
    ctis: list[bytes] = []
    monkeypatch.setattr(minting, "new_cti", lambda: ctis.pop())
    suffixes = odd_text(0, 20)
    scopes = st.one_of(
        st.tuples(suffixes.map(lambda s: "/sensors/" + s), st.sampled_from(["read", "publish", ["read", "publish"],
                                                                             "write"])),
        st.tuples(st.sampled_from(["/config/sensors", "/chained/x", "/ota/image", "/nope"]),
                  st.sampled_from(["read", "publish", 1, 16, 17, ["GET", "FETCH"]])))
    issued = []

    @settings(max_examples=300, deadline=None)
    @given(scopes, st.one_of(st.none(), st.sampled_from(["ota", "other"])), st.integers(65_536, 2**32 - 200_000),
           st.floats(0, 0.999), st.one_of(st.none(), odd_text(0, 40)), st.binary(min_size=8, max_size=8))
    def check(scope: tuple, audience, now: int, frac: float, peer, cti: bytes) -> None:
        req = TokenRequest("dev-a", [scope], bytes(8), now, 1, audience, bytes(16), b"", False)

        def run(path):
            ctis[:] = [cti]
            try:
                return "ok", path()
            except Refusal as r:
                return "refused", (r.code, r.message)
            except Exception as e:  # noqa: BLE001 -- compared: both paths must raise the same
                return "raised", type(e)

        one = run(lambda: issuer._mint_one(req, "dev-a", "sensors", profile, now, now + frac, peer))
        many = run(lambda: issuer._mint_many(req, "dev-a", profile, now, now + frac, peer))
        assert one == many, (scope, audience, peer)
        if one[0] == "ok":
            issued.append(1)

    try:
        check()
    finally:
        issuer.registry.close()
    assert len(issued) > 50, f"only {len(issued)} requests were issued"

