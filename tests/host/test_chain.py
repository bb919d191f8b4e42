import pytest

from crumb import attest, cbor, mint
from crumb.errors import BadSignature, ChainIncomplete, ChainInvalid, Malformed, Replayed, UnknownKey
from crumb.token import split
from crumb.wire import BLOCK_ATTEST

from .conftest import NOW, OP, RES
from .helpers import append_raw

HOPS = ("gateway", "ingest", "storage")


@pytest.fixture
def chain(nodes):
    return [(name, nodes[name].public) for name in HOPS]


@pytest.fixture(params=["key", "kid"])
def chained(request, issuer, chain):
    def make(**kw):
        return mint(issuer, sub="dev-0001", scope=[(RES, OP)], chain=chain, hop_refs=request.param, now=NOW, **kw)
    return make


def walk(token, nodes, hops=HOPS):
    for name in hops:
        token = attest(token, nodes[name], name)
    return token


def test_each_hop_accepts_in_order(chained, nodes, make_verifier):
    token = chained()
    for name in HOPS:
        make_verifier(hop=name).verify(token, RES, OP)
        token = attest(token, nodes[name], name)
    v = make_verifier().verify(token, RES, OP)
    assert v.attested == list(HOPS)


def test_sizes(issuer, chain, nodes):
    compact = walk(mint(issuer, sub="dev-0001", scope=[(RES, OP)], chain=chain, hop_refs="kid", now=NOW), nodes)
    assert len(compact) <= 420
    one = mint(issuer, sub="dev-0001", scope=[(RES, OP)], chain=chain[:1], now=NOW)
    assert len(attest(one, nodes["gateway"], "gateway")) - len(one) <= 80


def test_skipped_hop(chained, nodes, make_verifier):
    token = attest(chained(), nodes["gateway"], "gateway")
    with pytest.raises(ChainIncomplete, match="ingest"):
        make_verifier(hop="storage").verify(token, RES, OP)
    with pytest.raises(ChainIncomplete):
        make_verifier().verify(token, RES, OP)
    with pytest.raises(ChainIncomplete, match="gateway"):
        make_verifier(hop="ingest").verify(chained(), RES, OP)


def test_attest_refuses_out_of_order(chained, nodes):
    with pytest.raises(ChainInvalid, match="hop 2"):
        attest(chained(), nodes["ingest"], "ingest")


def test_forged_skip_and_reorder(chained, nodes, make_verifier):
    token = chained()
    skip = append_raw(token, nodes["ingest"], cbor.dumps([BLOCK_ATTEST, 1]))
    with pytest.raises(ChainInvalid, match="out of order"):
        make_verifier(hop="storage").verify(skip, RES, OP)
    t2 = walk(token, nodes, HOPS[:2])
    tok = split(t2)
    tok.blocks.reverse()
    with pytest.raises(ChainInvalid):
        make_verifier(hop="storage").verify(tok.to_bytes(), RES, OP)


def test_replay_to_earlier_hop(chained, nodes, make_verifier):
    token = walk(chained(), nodes, HOPS[:2])
    with pytest.raises(ChainInvalid, match="already passed"):
        make_verifier(hop="gateway").verify(token, RES, OP)
    with pytest.raises(ChainInvalid, match="already passed"):
        make_verifier(hop="ingest").verify(token, RES, OP)


def test_service_outside_chain(chained, make_verifier):
    with pytest.raises(ChainInvalid, match="not a hop"):
        make_verifier(hop="billing").verify(chained(), RES, OP)


def test_attestation_by_undeclared_key(chained, nodes, make_verifier):
    from crumb import SigningKey
    rogue = SigningKey(b"\x77" * 32)
    with pytest.raises(ChainInvalid):
        attest(chained(), rogue, "gateway")
    forged = append_raw(chained(), rogue, cbor.dumps([BLOCK_ATTEST, 0]))
    with pytest.raises(ChainInvalid, match="declared key"):
        make_verifier(hop="ingest").verify(forged, RES, OP)


def test_block_removal_duplication_splicing(chained, nodes, make_verifier):
    full = walk(chained(), nodes)
    tok = split(full)
    del tok.blocks[1]  # remove ingest's attestation
    with pytest.raises(ChainInvalid):
        make_verifier().verify(tok.to_bytes(), RES, OP)
    tok = split(full)
    tok.blocks.insert(1, tok.blocks[0])  # duplicate gateway's
    with pytest.raises(ChainInvalid):
        make_verifier().verify(tok.to_bytes(), RES, OP)
    # Splice: attestations from another token with the same chain.
    other = split(walk(chained(), nodes))
    mine = split(chained())
    mine.blocks = other.blocks
    with pytest.raises(ChainInvalid):
        make_verifier().verify(mine.to_bytes(), RES, OP)


def test_more_attestations_than_hops(issuer, nodes, chain, make_verifier):
    token = walk(mint(issuer, scope=[(RES, OP)], chain=chain, now=NOW), nodes)
    extra = append_raw(token, nodes["storage"], cbor.dumps([BLOCK_ATTEST, 2]))
    with pytest.raises(ChainInvalid):
        make_verifier().verify(extra, RES, OP)
    beyond = append_raw(token, nodes["storage"], cbor.dumps([BLOCK_ATTEST, 3]))
    with pytest.raises(ChainInvalid, match="not declared"):
        make_verifier().verify(beyond, RES, OP)


def test_attestation_on_chainless_token(issuer, nodes, make_verifier):
    token = append_raw(mint(issuer, scope=[(RES, OP)], now=NOW), nodes["gateway"], cbor.dumps([BLOCK_ATTEST, 0]))
    with pytest.raises(ChainInvalid):
        make_verifier().verify(token, RES, OP)


def test_chainless_token_at_any_hop(issuer, make_verifier):
    make_verifier(hop="gateway").verify(mint(issuer, scope=[(RES, OP)], now=NOW), RES, OP)


def test_kid_refs_need_node_keys(issuer, chain, nodes, make_verifier):
    token = attest(mint(issuer, scope=[(RES, OP)], chain=chain, hop_refs="kid", now=NOW), nodes["gateway"], "gateway")
    with pytest.raises(UnknownKey):
        make_verifier(hop="ingest", node_keys=[]).verify(token, RES, OP)


def test_single_use_per_hop_along_the_chain(chained, nodes, make_verifier):
    token = chained()
    gateway = make_verifier(hop="gateway")
    gateway.verify(token, RES, OP)
    with pytest.raises(Replayed):
        gateway.verify(token, RES, OP)
    token = attest(token, nodes["gateway"], "gateway")
    make_verifier(hop="ingest").verify(token, RES, OP)


def test_block_headers(chained, nodes, make_verifier):
    token = chained()
    with pytest.raises(BadSignature, match="algorithm"):
        make_verifier(hop="ingest").verify(
            append_raw(token, nodes["gateway"], cbor.dumps([BLOCK_ATTEST, 0]), protected=cbor.dumps({1: -7})), RES, OP)
    with pytest.raises(Malformed):
        make_verifier(hop="ingest").verify(
            append_raw(token, nodes["gateway"], cbor.dumps([BLOCK_ATTEST, 0]), protected=cbor.dumps({1: -8, 4: b"x"})), RES, OP)
    for body in ([BLOCK_ATTEST], [BLOCK_ATTEST, "0"], [BLOCK_ATTEST, 0, 1], [], "x"):
        with pytest.raises(Malformed):
            make_verifier(hop="ingest").verify(append_raw(token, nodes["gateway"], cbor.dumps(body)), RES, OP)
