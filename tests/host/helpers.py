"""Build tokens by hand, including ones the library refuses to build."""

from crumb import cbor, cose
from crumb.token import Block, Token, split
from crumb.wire import CLAIM_CTI, CLAIM_EXP, CLAIM_IAT, CLAIM_SCOPE, CLAIM_SUB

from .conftest import NOW, OP, RES


def claims(over: dict | None = None) -> dict:
    m = {CLAIM_SUB: "dev-0001", CLAIM_EXP: NOW + 60, CLAIM_IAT: NOW, CLAIM_CTI: b"\x01" * 8,
         CLAIM_SCOPE: cbor.dumps([[RES, OP]])}  # the scope claim: AIF in a byte string
    m.update(over or {})
    return m


def forge(key, payload: bytes, protected: bytes | None = None, extra: bytes = b"") -> bytes:
    """A token whose authority payload is exactly ``payload``, signed by ``key``."""
    protected = protected if protected is not None else cose.authority_protected(key.kid)
    p, _, payload, sig = cose.sign(key, protected, payload)
    return Token(Block(p, payload, sig), [], None).to_bytes() + extra


def forge_claims(key, m: dict) -> bytes:
    return forge(key, cbor.dumps(m))


def append_raw(token: bytes, key, body_bytes: bytes, aad: bytes | None = None,
               protected: bytes = cose.BLOCK_PROTECTED) -> bytes:
    tok = split(token)
    aad = tok.last_signature if aad is None else aad
    p, _, payload, sig = cose.sign(key, protected, body_bytes, aad)
    tok.blocks.append(Block(p, payload, sig))
    return tok.to_bytes()
