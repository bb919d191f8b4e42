import pytest

from crumb import MemoryReplayStore, caveat, mint
from crumb.errors import (
    BadSignature,
    CaveatFailed,
    CrumbError,
    Expired,
    Malformed,
    NotYetValid,
    Replayed,
    Revoked,
    ScopeDenied,
    StoreUnavailable,
    TooLarge,
    UnknownCaveat,
    UnknownKey,
    UnsupportedVersion,
)
from crumb.keys import SigningKey
from crumb.token import to_text
from crumb.wire import CLAIM_CRUMB, CLAIM_EXP, EXT_CAVEATS, EXT_USES

from .conftest import NOW, OP, RES
from .helpers import claims, forge, forge_claims


def test_mint_and_verify(issuer, make_verifier):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    v = make_verifier().verify(token, RES, OP)
    assert v.claims.sub == "dev-0001" and v.claims.exp == NOW + 60 and v.claims.uses == 1
    assert len(v.claims.cti) == 8


def test_text_form_verifies(issuer, make_verifier):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    make_verifier().verify(to_text(token), RES, OP)
    with pytest.raises(Malformed):
        make_verifier().verify(to_text(token) + "=", RES, OP)


def test_size_of_typical_token(issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    # 8-char subject, 15-char resource, one operation, exp, iat, 8-byte cti, kid.
    # A standard COSE_Sign1 over CWT claims cannot go below ~135 B (PROTOCOL.md §9).
    assert len(token) == 140


def test_single_use_is_replayed(issuer, make_verifier):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    v = make_verifier()
    v.verify(token, RES, OP)
    with pytest.raises(Replayed):
        v.verify(token, RES, OP)


def test_failed_verification_spends_no_use(issuer, make_verifier):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    v = make_verifier()
    with pytest.raises(ScopeDenied):
        v.verify(token, RES, "write")
    v.verify(token, RES, OP)


def test_multi_use(issuer, make_verifier):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], uses=3, now=NOW)
    v = make_verifier()
    for _ in range(3):
        v.verify(token, RES, OP)
    with pytest.raises(Replayed, match="3 use"):
        v.verify(token, RES, OP)


def test_uses_are_per_hop(issuer, make_verifier):
    token = mint(issuer, sub="d", scope=[(RES, OP)], now=NOW)
    v = make_verifier()
    v.verify(token, RES, OP, hop="a")
    v.verify(token, RES, OP, hop="b")
    with pytest.raises(Replayed):
        v.verify(token, RES, OP, hop="a")


def test_expiry_and_leeway(issuer, make_verifier, clock):
    token = mint(issuer, sub="d", scope=[(RES, OP)], ttl=10, now=NOW)
    clock.now = NOW + 10 + 29
    make_verifier(leeway=30).verify(token, RES, OP)
    clock.now = NOW + 10 + 30
    with pytest.raises(Expired):
        make_verifier(leeway=30).verify(token, RES, OP)


def test_the_default_leeway_is_5_seconds(issuer, clock):
    """Issue 16: the default was 30 s, half again the life of a 60 s token."""
    from crumb import Verifier
    token = mint(issuer, sub="d", scope=[(RES, OP)], ttl=60, now=NOW)
    clock.now = NOW + 60 + 4
    Verifier([issuer.public], clock=clock, replay=MemoryReplayStore(fence=False, clock=clock)).verify(token, RES, OP)
    clock.now = NOW + 60 + 5
    with pytest.raises(Expired):
        Verifier([issuer.public], clock=clock, replay=MemoryReplayStore(fence=False, clock=clock)).verify(
            token, RES, OP)
    clock.now = NOW - 6
    with pytest.raises(NotYetValid, match="future"):
        Verifier([issuer.public], clock=clock).verify(token, RES, OP)


def test_not_yet_valid(issuer, make_verifier, clock):
    with pytest.raises(NotYetValid, match="future"):
        make_verifier(leeway=5).verify(mint(issuer, scope=[(RES, OP)], now=NOW + 100), RES, OP)
    with pytest.raises(NotYetValid, match="before"):
        make_verifier(leeway=5).verify(mint(issuer, scope=[(RES, OP)], nbf=NOW + 100, ttl=600, now=NOW), RES, OP)


def test_scope(issuer, make_verifier):
    token = mint(issuer, scope=[("/sensors/*", ["read", "write"]), ("/act/valve", "open")], now=NOW, uses=10)
    v = make_verifier()
    v.verify(token, "/sensors/temp01", "write")
    v.verify(token, "/act/valve", "open")
    for res, op in (("/sensors/temp01", "delete"), ("/act/valve2", "open"), ("/sensor", "read"), ("/act/valve", "read")):
        with pytest.raises(ScopeDenied):
            v.verify(token, res, op)


def test_only_canonical_resources_are_granted(issuer, make_verifier):
    """PROTOCOL.md §4.2: a pattern matches by prefix, so "/sensors/*" would match "/sensors/../valves/1", which a
    service that normalises paths reads as "/valves/1". A request for a resource outside the canonical form is
    scope_denied, whatever the token; the check is crumb.scope.noncanonical, the issuer's and the middleware's."""
    from crumb.scope import check_canonical, noncanonical

    token = mint(issuer, scope=[("/sensors/*", "read"), ("*", "list")], now=NOW, uses=100)
    v = make_verifier()
    for res in ("/sensors/t", "/sensors/.t", "/sensors/..t", "/sensors/t.", "/sensors/a.b/c", "/sensors/t;v=1",
                "/sensors/;../x", "/sensors/...;/x"):
        assert noncanonical(res) is None
        v.verify(token, res, "read")
    for res in ("/sensors/../valves/1", "/sensors/./t", "/sensors/.", "/sensors/..", "/sensors//t", "/sensors/t/",
                "/sensors/%2e%2e/v", "/sensors/..\\v", "/sensors/.\t./v", "/sensors/t\n", "/sensors/t\x7f",
                "/sensors/..;/valves/1", "/sensors/..;x/v", "/sensors/.;"):
        assert noncanonical(res), res
        with pytest.raises(ScopeDenied, match="canonical form"):
            v.verify(token, res, "read")
        with pytest.raises(Malformed, match="canonical form"):
            check_canonical(res)
    # the same form for names that are not paths (an MQTT topic), and "/" is canonical
    for res in ("/", "sensors/t1", "a.b", "*"):
        assert noncanonical(res) is None, res
    for res in ("sensors//t1", "sensors/t1/", "./a", "..", "a\\b"):
        assert noncanonical(res), res
        with pytest.raises(ScopeDenied):
            v.verify(token, res, "list")
    # lone surrogates are not text a token can carry: malformed, never a UnicodeEncodeError
    for bad in ("/\ud800", "/" + "\udfff" * 100):
        with pytest.raises(Malformed):
            check_canonical(bad)
        with pytest.raises(Malformed):
            mint(issuer, scope=[(bad, "read")], now=NOW)
        with pytest.raises(Malformed):
            mint(issuer, scope=[("/a", bad)], now=NOW)


def test_rest_bitmask_scope(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, 1 | 4)], now=NOW, uses=5)  # GET | PUT
    v = make_verifier()
    v.verify(token, RES, "GET")
    v.verify(token, RES, "put")
    with pytest.raises(ScopeDenied):
        v.verify(token, RES, "POST")
    with pytest.raises(ScopeDenied):
        v.verify(token, RES, "read")


def test_audience(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], aud="ingest", now=NOW, uses=3)
    make_verifier(audience="ingest").verify(token, RES, OP)
    with pytest.raises(ScopeDenied, match="audience"):
        make_verifier(audience="storage").verify(token, RES, OP)
    with pytest.raises(ScopeDenied, match="audience"):
        make_verifier().verify(token, RES, OP)


def test_caveats(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], now=NOW, uses=10, caveats=[
        caveat("lt", "time", NOW + 30), caveat("in", "fw", ["1.2", "1.3"]), caveat("ge", "battery", 20)])
    v = make_verifier()
    v.verify(token, RES, OP, facts={"fw": "1.3", "battery": 50})
    for facts in ({"fw": "1.1", "battery": 50}, {"fw": "1.3", "battery": 5}, {"fw": "1.3"}, {},
                  {"fw": "1.3", "battery": "50"}, {"fw": "1.3", "battery": True}):
        with pytest.raises(CaveatFailed):
            v.verify(token, RES, OP, facts=facts)


def test_unknown_caveat_predicate(issuer, make_verifier):
    token = forge_claims(issuer, claims({CLAIM_CRUMB: {EXT_CAVEATS: [[99, 0, RES]]}}))
    with pytest.raises(UnknownCaveat):
        make_verifier().verify(token, RES, OP)
    token = forge_claims(issuer, claims({CLAIM_CRUMB: {EXT_CAVEATS: [[1, 42, RES]]}}))
    with pytest.raises(UnknownCaveat):
        make_verifier().verify(token, RES, OP)


def test_unknown_critical_fields(issuer, make_verifier):
    with pytest.raises(UnknownCaveat, match="claim"):
        make_verifier().verify(forge_claims(issuer, claims({8: {1: b"k"}})), RES, OP)
    with pytest.raises(UnknownCaveat, match="extension"):
        make_verifier().verify(forge_claims(issuer, claims({CLAIM_CRUMB: {77: 1}})), RES, OP)


def test_one_meaning_one_encoding_in_claims(issuer, make_verifier):
    for ext in ({}, {EXT_USES: 1}, {EXT_CAVEATS: []}):
        with pytest.raises(Malformed):
            make_verifier().verify(forge_claims(issuer, claims({CLAIM_CRUMB: ext})), RES, OP)


def test_claim_types(issuer, make_verifier):
    for over in ({CLAIM_EXP: "soon"}, {CLAIM_EXP: -5}, {CLAIM_EXP: True}, {7: b""}, {9: []},
                 {9: [[RES]]}, {9: [["/a*b", OP]]}, {9: [[RES, 0]]}, {9: [[RES, 1 << 9]]},
                 {9: [[RES, [OP]]]}, {9: [[RES, [OP, OP]]]}, {2: ""}, {2: 7}):
        with pytest.raises(Malformed):
            make_verifier().verify(forge_claims(issuer, claims(over)), RES, OP)
    m = claims()
    del m[CLAIM_EXP]
    with pytest.raises(Malformed, match="missing"):
        make_verifier().verify(forge_claims(issuer, m), RES, OP)


def test_unknown_key(issuer, make_verifier):
    other = SigningKey(b"\x09" * 32)
    with pytest.raises(UnknownKey):
        make_verifier().verify(mint(other, scope=[(RES, OP)], now=NOW), RES, OP)


def test_signature_by_wrong_key_with_trusted_kid(issuer, make_verifier):
    other = SigningKey(b"\x09" * 32)
    from crumb import cbor, cose
    token = forge(other, cbor.dumps(claims()), protected=cose.authority_protected(issuer.kid))
    with pytest.raises(BadSignature):
        make_verifier().verify(token, RES, OP)


def test_wrong_alg(issuer, make_verifier):
    from crumb import cbor
    for alg in (-7, -35, 5):
        token = forge(issuer, cbor.dumps(claims()), protected=cbor.dumps({1: alg, 4: issuer.kid}))
        with pytest.raises(BadSignature, match="algorithm"):
            make_verifier().verify(token, RES, OP)


def test_protected_header_shape(issuer, make_verifier):
    from crumb import cbor
    for header in ({1: -8}, {1: -8, 4: b"abc"}, {1: -8, 4: issuer.kid, 3: 1}):
        token = forge(issuer, cbor.dumps(claims()), protected=cbor.dumps(header))
        with pytest.raises(Malformed):
            make_verifier().verify(token, RES, OP)


def test_non_canonical_payload_is_rejected_even_when_signed(issuer, make_verifier):
    good = claims()
    from crumb import cbor
    canonical = cbor.dumps(good)
    dup = bytes([canonical[0] + 1]) + canonical[1:] + b"\x02\x64evil"  # sub again, out of order
    long_exp = canonical.replace(b"\x04\x1a", b"\x04\x1b\x00\x00\x00\x00", 1)
    for payload in (dup, long_exp, canonical + b"\x00"):
        with pytest.raises(Malformed):
            make_verifier().verify(forge(issuer, payload), RES, OP)


def test_unsupported_version(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], now=NOW)
    assert token[1] == 2
    for other in (b"\x01", b"\x03"):  # 1: the scope claim was the bare AIF array
        with pytest.raises(UnsupportedVersion):
            make_verifier().verify(token[:1] + other + token[2:], RES, OP)


def test_too_large(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], now=NOW)
    with pytest.raises(TooLarge):
        make_verifier(max_token_bytes=100).verify(token, RES, OP)
    with pytest.raises(TooLarge):
        make_verifier().verify(b"\x82\x02" + b"\x00" * 5000, RES, OP)


def test_revoked(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], now=NOW, cti=b"revoked!")
    with pytest.raises(Revoked):
        make_verifier(revoked=lambda c: c.cti == b"revoked!").verify(token, RES, OP)


def test_restart_fence(issuer, clock):
    """A new store refuses every token a verifier could have accepted before it started: issued
    before it, in its very second, or up to its leeway after (an issuer clock that far ahead)."""
    from crumb import Verifier
    clock.now = NOW + 0.5
    v = Verifier([issuer.public], clock=clock, leeway=5, replay=MemoryReplayStore(clock=clock, leeway=5))
    for iat in (NOW - 5, NOW, NOW + 5):
        with pytest.raises(Replayed, match="before this verifier started"):
            v.verify(mint(issuer, scope=[(RES, OP)], now=iat), RES, OP)
    clock.now = NOW + 1
    v.verify(mint(issuer, scope=[(RES, OP)], now=NOW + 6), RES, OP)  # an issuer 5 s ahead: within leeway
    clock.now = NOW + 6
    v.verify(mint(issuer, scope=[(RES, OP)], now=NOW + 6), RES, OP)


def test_replay_store_bounded_and_expiring(issuer, clock):
    store = MemoryReplayStore(max_entries=3, fence=False, leeway=0, clock=clock)
    for i in range(3):
        assert store.consume(bytes([i]), "", 1, NOW, NOW + 10)
    with pytest.raises(StoreUnavailable):
        store.consume(b"x", "", 1, NOW, NOW + 10)
    assert not store.consume(bytes([0]), "", 1, NOW, NOW + 10)  # still remembered
    clock.now = NOW + 30
    assert store.consume(b"x", "", 1, NOW + 20, NOW + 40)  # expired entries were dropped
    assert len(store) == 1


def test_mint_refuses_bad_input(issuer):
    with pytest.raises(ValueError):
        mint(issuer, scope=[(RES, OP)], ttl=0)
    with pytest.raises(CrumbError):
        mint(issuer, scope=[("/a*b", OP)])
    with pytest.raises(CrumbError):
        mint(issuer, scope=[])


def test_text_form_is_canonical(issuer, make_verifier):
    text = to_text(mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW))
    last = text[-1]
    sibling = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants = [text[:10] + "!" + text[10:], text[:10] + "\n" + text[10:], text.replace("-", "+").replace("_", "/"),
                text + "==", text[:-1] + sibling[sibling.index(last) ^ 1]]
    for v in variants:
        if v == text:
            continue
        with pytest.raises(Malformed):
            make_verifier().verify(v, RES, OP)
    make_verifier().verify(" " + text + "\n", RES, OP)  # surrounding white space is not part of it
