"""COSE_Sign1 (RFC 9052 §4.2): the signing input of every crumb block lives here."""

from __future__ import annotations

from .cbor import bstr_head, dumps
from .keys import PublicKey, SigningKey
from .wire import ALG_EDDSA, COSE_ALG, COSE_KID

_SIG1_PREFIX = b"\x84\x6aSignature1"  # ["Signature1", ... : context string of Sig_structure

# Appended blocks carry only the algorithm; the key is implied by the authority.
BLOCK_PROTECTED = dumps({COSE_ALG: ALG_EDDSA})


def authority_protected(kid: bytes) -> bytes:
    return dumps({COSE_ALG: ALG_EDDSA, COSE_KID: kid})


def signing_prefix(protected: bytes, external_aad: bytes) -> bytes:
    """Sig_structure up to the payload: what a verifier can compute once per header."""
    return b"".join((_SIG1_PREFIX, bstr_head(len(protected)), protected, bstr_head(len(external_aad)), external_aad))


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """Sig_structure = ["Signature1", protected, external_aad, payload], CBOR-encoded."""
    return signing_prefix(protected, external_aad) + bstr_head(len(payload)) + payload


def sign(key: SigningKey, protected: bytes, payload: bytes, external_aad: bytes = b"") -> list:
    """A COSE_Sign1 array: [protected, unprotected {}, payload, signature]."""
    signature = key.sign(sig_structure(protected, external_aad, payload))
    return [protected, {}, payload, signature]


def verify(key: PublicKey, protected: bytes, payload: bytes, signature: bytes, external_aad: bytes = b"") -> bool:
    return key.verify(sig_structure(protected, external_aad, payload), signature)
