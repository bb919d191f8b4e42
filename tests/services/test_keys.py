"""Pinned key files, the GET /keys contract, and fetched keys with rotation."""

from __future__ import annotations

import json

import pytest

from crumb import SigningKey, Verifier, attest, mint
from crumb.errors import ChainInvalid, UnknownKey
from crumb.keys import KeyFileError, save
from crumb.replay import MemoryReplayStore
from crumb.services.keyfetch import FetchedKeys, KeyFetchError
from crumb.services.keyset import KeySetError, load_file, parse_document, pinned

from .keyserver import KeyServer, document


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def token(key: SigningKey, **kw) -> bytes:
    return mint(key, sub="dev-0001", scope=[("/sensors/temp01", "publish")], **kw)


def verifier(resolver=None, keys=(), **kw) -> Verifier:
    return Verifier(keys, replay=MemoryReplayStore(fence=False), resolver=resolver, **kw)


# -- the document contract

def test_document_trusts_current_and_previous_only():
    cur, prev, old = (SigningKey.generate().public for _ in range(3))
    ks = parse_document(document(cur, prev, retired=[old]))
    assert set(ks.issuer) == {cur.kid, prev.kid}
    assert ks.issuer_key(old.kid) is None


def test_unknown_status_is_not_trusted_and_no_status_is_a_plain_jwk_set():
    k1, k2 = SigningKey.generate().public, SigningKey.generate().public
    ks = parse_document({"keys": [{**k1.to_jwk(), "status": "compromised"}, k2.to_jwk()]})
    assert set(ks.issuer) == {k2.kid}


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("keys"), '"keys" array'),
    (lambda d: d.update(keys={}), '"keys" array'),
    (lambda d: d["keys"][0].update(kid="00000000"), "is not the kid of its key"),
    (lambda d: d["keys"][0].update(crv="X25519"), "not an Ed25519 JWK"),
    (lambda d: d["keys"][0].update(x="AAAA"), "32 bytes"),
    (lambda d: d["keys"][0].update(x="not base64!"), "invalid 'x'"),
    (lambda d: d["keys"][0].update(status=1), "status is text"),
    (lambda d: d.update(nodes={}), '"nodes" is an array'),
    (lambda d: d["nodes"].append({"kty": "RSA"}), r"nodes\[1\]"),
    (lambda d: d["keys"].extend([d["keys"][0]] * 70), "more than 64"),
])
def test_off_contract_documents_are_refused_whole(mutate, match):
    doc = document(SigningKey.generate().public, nodes={"gw": SigningKey.generate().public})
    mutate(doc)
    with pytest.raises(KeySetError, match=match):
        parse_document(doc)


def test_a_key_listed_as_issuer_and_node_is_refused():
    k = SigningKey.generate().public
    with pytest.raises(KeySetError, match="as issuer and node"):
        parse_document(document(k, nodes={"gateway": k}))


# -- pinned files

def test_pinned_files(tmp_path):
    issuer, gw = SigningKey.generate(), SigningKey.generate()
    pub = save(issuer, tmp_path / "issuer.key")
    gw_pub = save(gw, tmp_path / "gw.key")
    (tmp_path / "keys.json").write_text(json.dumps(document(SigningKey.generate().public)))
    ks = pinned([pub, tmp_path / "issuer.key", tmp_path / "keys.json"], [gw_pub])
    assert issuer.kid in ks.issuer and len(ks.issuer) == 2 and set(ks.nodes) == {gw.kid}
    v = verifier(keys=ks.issuer.values(), node_keys=ks.nodes.values(), hop="ingest")
    chained = token(issuer, chain=[("gateway", gw.public), ("ingest", SigningKey.generate().public)],
                    hop_refs="kid")
    assert v.verify(attest(chained, gw, "gateway"), "/sensors/temp01", "publish").attested == ["gateway"]


def test_bad_pinned_files_are_usage_errors(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"keys": [{"kty": "OKP"}]}))
    (tmp_path / "text").write_text("hello")
    for name, match in (("bad.json", "not an Ed25519"), ("text", "not a JSON key file"), ("missing", "cannot read")):
        with pytest.raises(KeyFileError, match=match):
            load_file(tmp_path / name)


# -- fetched keys

def test_fetches_on_first_use_and_caches():
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url)
        v = verifier(keys)
        for _ in range(5):
            v.verify(token(issuer), "/sensors/temp01", "publish")
        assert srv.requests == 1 and keys.fetches == 1


def test_rotation_needs_no_restart():
    clock = Clock()
    old, new = SigningKey.generate(), SigningKey.generate()
    with KeyServer(document(old.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=10, clock=clock)
        v = verifier(keys)
        v.verify(token(old), "/sensors/temp01", "publish")
        srv.serve(document(new.public, previous=old.public))  # the issuer rotates
        clock.t += 11
        v.verify(token(new), "/sensors/temp01", "publish")  # unknown kid: refetched
        v.verify(token(old), "/sensors/temp01", "publish")  # previous still trusted
        assert srv.requests == 2


def test_refetch_on_unknown_kid_is_rate_limited():
    clock = Clock()
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        v = verifier(FetchedKeys(srv.url, min_interval=10, clock=clock))
        v.verify(token(issuer), "/sensors/temp01", "publish")
        for _ in range(20):  # tokens with made-up kids cannot hammer the issuer
            with pytest.raises(UnknownKey):
                v.verify(token(SigningKey.generate()), "/sensors/temp01", "publish")
        assert srv.requests == 1  # all within min_interval of the first fetch
        clock.t += 10
        for _ in range(5):
            with pytest.raises(UnknownKey):
                v.verify(token(SigningKey.generate()), "/sensors/temp01", "publish")
        assert srv.requests == 2


def test_retired_keys_stop_being_trusted_after_max_age():
    clock = Clock()
    old, new = SigningKey.generate(), SigningKey.generate()
    with KeyServer(document(new.public, previous=old.public)) as srv:
        v = verifier(FetchedKeys(srv.url, min_interval=1, max_age=60, clock=clock))
        v.verify(token(old), "/sensors/temp01", "publish")
        srv.serve(document(new.public, retired=[old.public]))
        clock.t += 30
        v.verify(token(old), "/sensors/temp01", "publish")  # cache still fresh
        clock.t += 31
        with pytest.raises(UnknownKey):  # refreshed: old is retired
            v.verify(token(old), "/sensors/temp01", "publish")


def test_issuer_outage_keeps_the_last_good_keys():
    clock = Clock()
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=1, max_age=5, clock=clock)
        v = verifier(keys)
        v.verify(token(issuer), "/sensors/temp01", "publish")
        for bad in (b"{not json", json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]}).encode()):
            srv.serve(bad)
            clock.t += 10
            v.verify(token(issuer), "/sensors/temp01", "publish")
        srv.status = 500
        clock.t += 10
        v.verify(token(issuer), "/sensors/temp01", "publish")
        url = srv.url
    clock.t += 10  # the server is gone
    v.verify(token(issuer), "/sensors/temp01", "publish")
    assert keys.failures == 4 and keys.fetches == 1 and url in keys.last_error


def test_no_keys_before_a_successful_fetch_is_unknown_key():
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        srv.status = 503
        keys = FetchedKeys(srv.url, min_interval=0)
        with pytest.raises(UnknownKey):
            verifier(keys).verify(token(issuer), "/sensors/temp01", "publish")
        with pytest.raises(KeyFetchError, match="503") as e:
            keys.fetch()
        assert e.value.code == "keys_unavailable"
        srv.status = 200
        verifier(keys).verify(token(issuer), "/sensors/temp01", "publish")


def test_node_keys_resolve_kid_refs_but_never_sign_authority_blocks():
    issuer, gw, ingest = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    with KeyServer(document(issuer.public, nodes={"gateway": gw.public, "ingest": ingest.public})) as srv:
        v = verifier(FetchedKeys(srv.url), hop="ingest")
        t = token(issuer, chain=[("gateway", gw.public), ("ingest", ingest.public)], hop_refs="kid")
        assert v.verify(attest(t, gw, "gateway"), "/sensors/temp01", "publish").attested == ["gateway"]
        with pytest.raises(UnknownKey):
            v.verify(token(gw), "/sensors/temp01", "publish")
        # A forged attestation by a key that is not the declared node's.
        with pytest.raises(ChainInvalid):
            v.verify(_forged(t, ingest), "/sensors/temp01", "publish")


def _forged(t: bytes, wrong: SigningKey) -> bytes:
    from crumb import cbor, cose
    from crumb.token import Block, split
    from crumb.wire import BLOCK_ATTEST

    tok = split(t)
    p, _, payload, sig = cose.sign(wrong, cose.BLOCK_PROTECTED, cbor.dumps([BLOCK_ATTEST, 0]), tok.last_signature)
    tok.blocks.append(Block(p, payload, sig))
    return tok.to_bytes()


def test_a_document_too_large_is_refused():
    with KeyServer() as srv:
        srv.serve(b'{"keys": [], "pad": "' + b"x" * 70_000 + b'"}')
        with pytest.raises(KeySetError, match="larger than") as e:
            FetchedKeys(srv.url).fetch()
        assert e.value.code == "invalid_key"
