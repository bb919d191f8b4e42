import pytest

from crumb import attenuate, attenuate_open, attest, caveat, cbor, mint, seal
from crumb.errors import (
    BadSignature,
    CaveatFailed,
    ChainIncomplete,
    ChainInvalid,
    Malformed,
    ScopeDenied,
    UnknownCaveat,
)
from crumb.keys import SigningKey
from crumb.token import split
from crumb.wire import BLOCK_ATTENUATE, BLOCK_OPEN

from .conftest import NOW, OP, RES
from .helpers import append_raw

FLEET = "/fleet/*"


@pytest.fixture
def gw():
    return SigningKey(b"\x42" * 32)


@pytest.fixture
def fleet(issuer, gw):
    return mint(issuer, sub="gw-01", scope=[(FLEET, ["read", "write"])], attenuators=[("gw", gw.public)],
                uses=10, ttl=600, now=NOW)


def test_named_attenuation_narrows(fleet, gw, make_verifier):
    token = attenuate(fleet, gw, [caveat("eq", "resource", "/fleet/s1/temp"), caveat("eq", "operation", "read"),
                                  caveat("lt", "time", NOW + 60)])
    v = make_verifier()
    v.verify(token, "/fleet/s1/temp", "read")
    with pytest.raises(CaveatFailed):
        v.verify(token, "/fleet/s2/temp", "read")
    with pytest.raises(CaveatFailed):
        v.verify(token, "/fleet/s1/temp", "write")


def test_attenuation_cannot_widen(fleet, gw, make_verifier):
    token = attenuate(fleet, gw, [caveat("prefix", "resource", "/")])
    with pytest.raises(ScopeDenied):
        make_verifier().verify(token, "/other/x", "read")
    with pytest.raises(ScopeDenied):
        make_verifier().verify(token, "/fleet/s1/temp", "delete")


def test_required_attenuation_cannot_be_stripped(fleet, gw, make_verifier):
    with pytest.raises(ChainIncomplete, match="gw"):
        make_verifier().verify(fleet, "/fleet/s1/temp", "read")
    token = attenuate(fleet, gw, [caveat("eq", "resource", "/fleet/s1/temp")])
    tok = split(token)
    tok.blocks.clear()
    with pytest.raises(ChainIncomplete):
        make_verifier().verify(tok.to_bytes(), "/fleet/s2/temp", "read")


def test_attenuator_once_only(fleet, gw, make_verifier):
    token = attenuate(fleet, gw, [caveat("eq", "resource", "/fleet/s1/temp")])
    with pytest.raises(ChainInvalid, match="already"):
        attenuate(token, gw, [])
    twice = append_raw(token, gw, cbor.dumps([BLOCK_ATTENUATE, 0, []]))
    with pytest.raises(ChainInvalid, match="twice"):
        make_verifier().verify(twice, "/fleet/s1/temp", "read")


def test_undeclared_attenuator(fleet, make_verifier):
    rogue = SigningKey(b"\x66" * 32)
    with pytest.raises(ChainInvalid):
        attenuate(fleet, rogue, [])
    forged = append_raw(fleet, rogue, cbor.dumps([BLOCK_ATTENUATE, 0, []]))
    with pytest.raises(BadSignature):
        make_verifier().verify(forged, "/fleet/s1/temp", "read")
    beyond = append_raw(fleet, rogue, cbor.dumps([BLOCK_ATTENUATE, 1, []]))
    with pytest.raises(ChainInvalid):
        make_verifier().verify(beyond, "/fleet/s1/temp", "read")


def test_unknown_block_kind(fleet, gw, make_verifier):
    with pytest.raises(UnknownCaveat):
        make_verifier().verify(append_raw(fleet, gw, cbor.dumps([9, 0])), "/fleet/s1/temp", "read")


def test_attenuation_caveats_are_checked(fleet, gw, make_verifier):
    with pytest.raises(UnknownCaveat):
        make_verifier().verify(append_raw(fleet, gw, cbor.dumps([BLOCK_ATTENUATE, 0, [[42, 0, 1]]])),
                               "/fleet/s1/temp", "read")


def test_attenuation_with_chain(issuer, gw, nodes, make_verifier):
    token = mint(issuer, scope=[(FLEET, "read")], attenuators=[("gw", gw.public)],
                 chain=[("gateway", nodes["gateway"].public)], now=NOW, uses=2)
    token = attenuate(token, gw, [caveat("eq", "resource", "/fleet/a")])
    make_verifier(hop="gateway").verify(token, "/fleet/a", "read")
    token = attest(token, nodes["gateway"], "gateway")
    make_verifier().verify(token, "/fleet/a", "read")
    with pytest.raises(CaveatFailed):
        make_verifier().verify(token, "/fleet/b", "read")


# -- open attenuation -------------------------------------------------------------


@pytest.fixture
def open_token(issuer):
    return mint(issuer, sub="dev-0001", scope=[("/data/*", ["read", "write"])], open=True, uses=10, now=NOW)


def test_open_attenuation_by_any_holder(open_token, make_verifier):
    v = make_verifier()
    v.verify(open_token, "/data/x", "write")
    one = attenuate_open(open_token, [caveat("eq", "operation", "read")])
    two = attenuate_open(one, [caveat("prefix", "resource", "/data/public/")])
    v.verify(two, "/data/public/a", "read")
    for res, op in (("/data/public/a", "write"), ("/data/private", "read")):
        with pytest.raises(CaveatFailed):
            v.verify(two, res, op)


def test_open_attenuation_strip_is_detected(open_token, make_verifier):
    one = attenuate_open(open_token, [caveat("eq", "operation", "read")])
    two = attenuate_open(one, [caveat("prefix", "resource", "/data/public/")])
    tok = split(two)
    tok.blocks.pop()  # the holder of `two` has only the last secret
    with pytest.raises(BadSignature, match="proof"):
        make_verifier().verify(tok.to_bytes(), "/data/private", "read")
    tok.blocks.clear()
    with pytest.raises(BadSignature, match="proof"):
        make_verifier().verify(tok.to_bytes(), "/data/private", "write")


def test_open_token_needs_proof(open_token, make_verifier):
    tok = split(open_token)
    tok.proof = None
    with pytest.raises(Malformed, match="proof"):
        make_verifier().verify(tok.to_bytes(), "/data/x", "read")


def test_seal(open_token, make_verifier):
    one = attenuate_open(open_token, [caveat("eq", "operation", "read")])
    sealed = seal(one)
    make_verifier().verify(sealed, "/data/x", "read")
    with pytest.raises(ChainInvalid):
        attenuate_open(sealed, [])
    tok = split(sealed)
    tok.blocks.clear()  # strip, keep the seal
    with pytest.raises(BadSignature, match="seal"):
        make_verifier().verify(tok.to_bytes(), "/data/x", "write")
    tok = split(sealed)
    tok.proof = bytes(64)
    with pytest.raises(BadSignature, match="seal"):
        make_verifier().verify(tok.to_bytes(), "/data/x", "read")


def test_open_block_on_closed_token(issuer, make_verifier):
    token = mint(issuer, scope=[(RES, OP)], now=NOW)
    eph = SigningKey(b"\x55" * 32)
    forged = append_raw(token, eph, cbor.dumps([BLOCK_OPEN, [], eph.public.raw]))
    with pytest.raises(ChainInvalid, match="not open"):
        make_verifier().verify(forged, RES, OP)
    tok = split(token)
    tok.proof = eph.seed
    with pytest.raises(Malformed):
        make_verifier().verify(tok.to_bytes(), RES, OP)


def test_open_attenuation_keeps_chain(issuer, nodes, make_verifier):
    token = mint(issuer, scope=[("/data/*", "read")], open=True, chain=[("gateway", nodes["gateway"].public)], now=NOW)
    token = attenuate_open(token, [caveat("eq", "resource", "/data/a")])
    token = attest(token, nodes["gateway"], "gateway")
    make_verifier().verify(token, "/data/a", "read")
