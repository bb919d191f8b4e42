"""An independent COSE implementation (pycose) verifies crumb's authority block.

Blocks travel untagged inside a token (RFC 9052 §2: the context says what they
are); a generic COSE library gets them with tag 18 (COSE_Sign1) in front.
"""

from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from crumb import attest, cbor, mint
from crumb.token import split

from .conftest import NOW, OP, RES


def _pycose_verify(block, public_raw: bytes, external_aad: bytes = b"") -> bool:
    message = Sign1Message.decode(b"\xd2" + cbor.dumps(block.to_cbor()))
    message.external_aad = external_aad
    message.key = OKPKey(crv=Ed25519, x=public_raw)
    return message.verify_signature()


def test_pycose_verifies_authority(issuer):
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], now=NOW)
    auth = split(token).authority
    assert _pycose_verify(auth, issuer.public.raw)
    claims = cbor.loads(Sign1Message.decode(b"\xd2" + cbor.dumps(auth.to_cbor())).payload)
    # claim 9 (scope) has the registered type: a byte string, here holding the AIF (RFC 9237)
    assert claims[2] == "dev-0001" and isinstance(claims[9], bytes) and cbor.loads(claims[9]) == [[RES, OP]]


def test_pycose_rejects_other_key(issuer, nodes):
    auth = split(mint(issuer, scope=[(RES, OP)], now=NOW)).authority
    assert not _pycose_verify(auth, nodes["gateway"].public.raw)


def test_pycose_verifies_attestation_with_external_aad(issuer, nodes):
    token = mint(issuer, scope=[(RES, OP)], chain=[("gateway", nodes["gateway"].public)], now=NOW)
    tok = split(attest(token, nodes["gateway"], "gateway"))
    assert _pycose_verify(tok.blocks[0], nodes["gateway"].public.raw, tok.authority.signature)
    assert not _pycose_verify(tok.blocks[0], nodes["gateway"].public.raw, b"")


def test_python_cwt_verifies_and_reads_claims(issuer):
    import cwt
    from cwt import COSEKey

    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], ttl=3600)
    auth = split(token).authority
    # COSE_Key: kty OKP (1), kid (2), alg EdDSA (3), crv Ed25519 (-1), x (-2).
    key = COSEKey.new({1: 1, 2: issuer.kid, 3: -8, -1: 6, -2: issuer.public.raw})
    claims = cwt.decode(b"\xd2" + cbor.dumps(auth.to_cbor()), key)
    # python-cwt reads claim 9 as the byte string the IANA CWT registry types it as
    assert claims[2] == "dev-0001" and isinstance(claims[9], bytes) and cbor.loads(claims[9]) == [[RES, OP]]
