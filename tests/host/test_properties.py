"""Round trips: what is minted verifies with exactly the claims asked for."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crumb import Verifier, caveat, mint
from crumb.errors import ScopeDenied
from crumb.inspect import inspect
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.scope import noncanonical
from crumb.token import split

from .conftest import NOW

ISSUER = SigningKey(bytes(range(32)))

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="*"), min_size=1, max_size=24)
ops = st.lists(st.sampled_from(["read", "write", "delete", "open", "x"]), min_size=1, max_size=3, unique=True)


@settings(max_examples=200, deadline=None)
@given(sub=names, resource=names, operations=ops, ttl=st.integers(1, 10**6), uses=st.integers(1, 2**32 - 1),
       aud=st.none() | names, cti=st.binary(min_size=1, max_size=32), threshold=st.integers(0, 2**40))
def test_round_trip(sub, resource, operations, ttl, uses, aud, cti, threshold):
    token = mint(ISSUER, sub=sub, scope=[(resource, operations)], ttl=ttl, uses=uses, aud=aud, cti=cti,
                 caveats=[caveat("ge", "level", threshold)], now=NOW)
    assert split(token).to_bytes() == token
    v = Verifier([ISSUER.public], clock=lambda: NOW, audience=aud, replay=MemoryReplayStore(fence=False))
    if noncanonical(resource) is not None:  # "/a/", "..", "a%b": no token grants them (PROTOCOL.md §4.2)
        for op in operations:
            with pytest.raises(ScopeDenied, match="canonical"):
                v.verify(token, resource, op, facts={"level": threshold}, consume=False)
        return
    for op in operations:
        claims = v.verify(token, resource, op, facts={"level": threshold}, consume=False).claims
        assert (claims.sub, claims.uses, claims.cti, claims.aud) == (sub, uses, cti, aud)
        assert claims.exp == NOW + ttl and claims.iat == NOW
    report = inspect(token)
    assert report["problems"] == [] and report["authority"]["claims"]["sub"] == sub


def _outcome(fn):
    try:
        return ("ok", fn().to_map())
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        return (getattr(e, "code", type(e).__name__),)


def _cnf() -> dict:
    from crumb.pop import CnfSealer, x25519_public
    return CnfSealer(x25519_public(ISSUER.public), bytes([9]) * 32).cnf(bytes(16), bytes(13))


payload_maps = st.fixed_dictionaries(
    {4: st.integers(0, 2**33), 6: st.integers(0, 2**33), 7: st.binary(min_size=0, max_size=34),
     9: st.sampled_from([[["/a", "read"]], [["/a*", "x"]], [["/*a", "x"]], [["", "x"]], [["/a", ""]],
                         [["/a", 3]], [["/a", "r"], ["/b", "w"]], "scope", [["/\u00e9t\u00e9", "\u00fc"]]])},
    optional={1: names, 2: names | st.integers(-2**63, 2**63), 3: st.just(""), 5: st.integers(0, 2**33), 8: st.just(1) | st.just(_cnf()),
              -65537: st.just({1: 2})},
)


@settings(max_examples=600, deadline=None)
@given(payload_maps, st.data())
def test_fast_claims_path_agrees_with_general_path(m, data):
    from crumb import cbor
    from crumb.claims import Claims, loads_claims

    payload = bytearray(cbor.dumps(m))
    if data.draw(st.booleans()):  # and damaged bytes
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(0, len(payload) - 1))
            payload[pos] = data.draw(st.integers(0, 255))
    payload = bytes(payload)
    # the general path: the claims' CBOR (at the depth a cnf needs, PROTOCOL.md §4.4), then the checks
    assert _outcome(lambda: Claims.decode(payload)) == _outcome(lambda: Claims.parse(loads_claims(payload)))



def _shape(tok):
    blocks = [tok.authority, *tok.blocks]
    return tok.version, [(b.protected, b.payload, b.signature) for b in blocks], tok.proof


@settings(max_examples=600, deadline=None)
@given(payload_maps, st.integers(0, 2), st.data())
def test_fast_split_path_agrees_with_general_path(m, appended, data):
    """token.split's fast path (the common one-block token) against the general parser, byte for byte."""
    from crumb import cbor, cose
    from crumb.token import FORMAT_VERSION, _split_common, _split_general

    authority = split(mint(ISSUER, sub="d", scope=[("/a", ["read"])], ttl=60, now=NOW)).authority
    payload = cbor.dumps(m)
    # a random payload under the authority header, then 0..2 appended blocks: shapes on and off the fast path
    body = [FORMAT_VERSION, [authority.protected, {}, payload, bytes(64)]]
    body += [[cose.BLOCK_PROTECTED, {}, payload, bytes(64)] for _ in range(appended)]
    raw = bytearray(cbor.dumps(body))
    if data.draw(st.booleans()):  # and damaged bytes
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw)

    try:
        general = ("ok", _shape(_split_general(raw)))
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        general = (getattr(e, "code", type(e).__name__),)
    fast = _split_common(raw)
    if fast is not None:  # what the fast path accepts, the general one reads the same way
        assert general == ("ok", _shape(fast))
    if appended == 0 and len(payload) >= 24 and raw == bytes(cbor.dumps(body)):
        assert fast is not None  # and it does take the common token (else the test would hold nothing)
