"""Token minting on the issuer's hot path: crumb.token.mint, from a template.

For one (key, device, scope, rule) everything in a token but exp, iat and
cti is the same each time. The claims map is deterministic CBOR with keys in
the order 1 iss, 2 sub, 3 aud, 4 exp, 6 iat, 7 cti, 9 scope, -65537 crumb,
so the varying part sits between a constant prefix and a constant suffix.
The template is built once with the core encoder and checked on creation:
its first payload must decode and parse as the claims it stands for
(mint's "refuse to sign what a verifier would reject").

Two implementations of a token's bytes, no more: crumb.token.mint, the
general one, and this fast path (Minter.prepare / MintLane.prepare, then
finish). A differential test holds the fast path to mint for random shapes
(tests/issuer/test_differential.py).

Why: the core encoder spends ~140 µs per token in pure-Python CBOR on the
reference machine; from a template, minting is the Ed25519 signature plus a
few µs.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict

from .. import cbor
from ..claims import Claims, Party
from ..cose import authority_protected, signing_prefix
from ..keys import PublicKey, SigningKey
from ..scope import encode_scope
from ..wire import CLAIM_AUD, CLAIM_CTI, CLAIM_EXP, CLAIM_IAT, CLAIM_ISS, CLAIM_SUB, CTI_BYTES, FORMAT_VERSION
from .protocol import encode_uint

_SPLIT_LOW = (CLAIM_ISS, CLAIM_SUB, CLAIM_AUD)     # encoded before exp
_VARYING = (CLAIM_EXP, CLAIM_IAT, CLAIM_CTI)
# exp and iat as 4-byte uints (their preferred form from 65536 until 2106): key, 0x1a, exp, key, 0x1a, iat.
# The keys are below 24, so each is its own one-byte encoding.
_TIMES = struct.Struct(">BBIBBI")
_EXP_KEY, _IAT_KEY, _CTI_KEY = (cbor.dumps(key) for key in _VARYING)

# Token ids come from one getrandom() per 512 tokens rather than one each. Each id
# is popped (atomically, under the GIL) and never handed out twice; a forked
# child starts with none, so parent and child never share one.
_CTIS: list[bytes] = []
os.register_at_fork(after_in_child=_CTIS.clear)


def new_cti() -> bytes:
    try:
        return _CTIS.pop()
    except IndexError:
        pool = os.urandom(CTI_BYTES * 512)
        _CTIS.extend([pool[i:i + CTI_BYTES] for i in range(0, len(pool), CTI_BYTES)])
        return _CTIS.pop()


def _party(name: str, key: PublicKey, refs: str) -> Party:
    return Party(name, key.raw if refs == "key" else key.kid)


class _Template:
    __slots__ = ("prefix", "suffix")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self.prefix = prefix
        self.suffix = suffix


class Minter:
    """Prepares tokens identical to ``crumb.token.mint``'s; caches one template per shape."""

    def __init__(self, max_templates: int = 4096) -> None:
        self.max_templates = max_templates
        self._templates: OrderedDict = OrderedDict()
        # Per signing key: (Sig_structure up to the payload, token bytes up to the payload).
        # Both are constant for a key; building them per token was ~3 µs of joins and heads.
        self._keyed: dict[bytes, tuple[bytes, bytes]] = {}

    def _template(self, shape: tuple, key: SigningKey) -> _Template:
        (_, iss, sub, aud, resource, perm, ttl, uses, chain, attenuators, refs) = shape
        # What mint refuses before encoding (the probe below catches the rest).
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if uses < 1:
            raise ValueError("uses must be 1 or more")
        claims = Claims(exp=0, iat=0, cti=bytes(CTI_BYTES), scope=encode_scope([(resource, perm)]), iss=iss,
                        sub=sub, aud=aud, uses=uses,
                        chain=[_party(n, k, refs) for n, k in chain],
                        attenuators=[_party(n, k, refs) for n, k in attenuators])
        m = claims.to_map()
        low = {k: v for k, v in m.items() if k in _SPLIT_LOW}
        high = {k: v for k, v in m.items() if k not in _SPLIT_LOW and k not in _VARYING}
        # A map header for all entries (at most 9: one byte), then the low entries without theirs.
        prefix = bytes((0xA0 | len(m),)) + cbor.dumps(low)[1:]
        suffix = cbor.dumps(high)[1:]
        template = _Template(prefix, suffix)
        # Refuse to sign what a verifier would reject, and prove the split is exact.
        probe = self._payload(template, 1_700_000_000, 1_700_000_000 + ttl, b"\x01" * CTI_BYTES)
        m.update({CLAIM_EXP: 1_700_000_000 + ttl, CLAIM_IAT: 1_700_000_000, CLAIM_CTI: b"\x01" * CTI_BYTES})
        if probe != cbor.dumps(m):
            raise AssertionError("token template does not reproduce the core encoding")
        Claims.decode(probe)
        return template

    @staticmethod
    def _payload(t: _Template, iat: int, exp: int, cti: bytes) -> bytes:
        if 0x10000 <= iat and exp < 0x100000000:  # every real token: no encoder call
            times = _TIMES.pack(CLAIM_EXP, 0x1A, exp, CLAIM_IAT, 0x1A, iat)
        else:
            times = b"".join((_EXP_KEY, encode_uint(exp), _IAT_KEY, encode_uint(iat)))
        return b"".join((t.prefix, times, _CTI_KEY, cbor.bstr_head(len(cti)), cti, t.suffix))

    def prepare(self, key: SigningKey, *, resource: str, permission: object, sub: str | None, ttl: int,
                uses: int = 1, iss: str | None = None, aud: str | None = None, chain: tuple = (),
                attenuators: tuple = (), hop_refs: str = "key", now: int,
                cti: bytes | None = None) -> tuple[bytes, bytes, bytes]:
        """(token bytes up to the signature, Sig_structure to sign, cti); ``finish`` completes the token.

        The issuer signs later, in a batch, as the token's audit record is committed.
        """
        return self.lane(key, resource=resource, permission=permission, sub=sub, ttl=ttl, uses=uses, iss=iss,
                         aud=aud, chain=chain, attenuators=attenuators, hop_refs=hop_refs).prepare(now, cti)

    def prepare_claims(self, key: SigningKey, claims: Claims) -> tuple[bytes, bytes]:
        """(token bytes up to the signature, Sig_structure to sign) for any claims, through the core
        encoder as crumb.token.mint does: the tokens no template can hold (a PoP token's cnf differs
        in every token)."""
        payload = cbor.dumps(claims.to_map())
        Claims.decode(payload)  # refuse to sign what a verifier would reject
        keyed = self._keyed.get(key.kid)
        if keyed is None:
            self._parts(key, "/", "x", None, 1, 1, None, None, (), (), "kid")  # fills self._keyed
            keyed = self._keyed[key.kid]
        head = cbor.bstr_head(len(payload))
        return b"".join((keyed[1], head, payload)), b"".join((keyed[0], head, payload))

    def lane(self, key: SigningKey, *, resource: str, permission: object, sub: str | None, ttl: int,
             uses: int = 1, iss: str | None = None, aud: str | None = None, chain: tuple = (),
             attenuators: tuple = (), hop_refs: str = "key") -> MintLane:
        """A MintLane whose prepare(now) equals prepare(key, ..., now=now) for these arguments."""
        template, to_sign, head = self._parts(key, resource, permission, sub, ttl, uses, iss, aud, chain,
                                              attenuators, hop_refs)
        return MintLane(template, ttl, to_sign, head)

    def _parts(self, key: SigningKey, resource: str, permission: object, sub: str | None, ttl: int, uses: int,
               iss: str | None, aud: str | None, chain: tuple, attenuators: tuple,
               hop_refs: str) -> tuple[_Template, bytes, bytes]:
        """(claims template, Sig_structure up to the payload, token bytes up to the payload)."""
        perm_key = tuple(permission) if isinstance(permission, list) else permission
        shape = (key.kid, iss, sub, aud, resource, perm_key, ttl, uses, chain, attenuators, hop_refs)
        templates = self._templates
        template = templates.get(shape)
        if template is None:
            template = self._template((key.kid, iss, sub, aud, resource,
                                       list(permission) if isinstance(permission, list) else permission,
                                       ttl, uses, chain, attenuators, hop_refs), key)
            templates[shape] = template
            if len(templates) > self.max_templates:
                templates.popitem(last=False)
        keyed = self._keyed.get(key.kid)
        if keyed is None:
            protected = authority_protected(key.kid)
            # [version, [protected, {}, payload, signature]] up to the payload's bstr head
            head = b"".join((b"\x82", cbor.dumps(FORMAT_VERSION), b"\x84", cbor.bstr_head(len(protected)),
                             protected, b"\xa0"))
            keyed = self._keyed[key.kid] = (signing_prefix(protected, b""), head)
        return template, keyed[0], keyed[1]


class MintLane:
    """Minter.prepare for one fixed shape (key, claims but exp, iat and cti): the issuer's lanes."""

    __slots__ = ("head", "template", "to_sign", "ttl")

    def __init__(self, template: _Template, ttl: int, to_sign: bytes, head: bytes) -> None:
        self.template, self.ttl, self.to_sign, self.head = template, ttl, to_sign, head

    def prepare(self, now: int, cti: bytes | None = None) -> tuple[bytes, bytes, bytes]:
        if cti is None:
            cti = new_cti()
        payload = Minter._payload(self.template, now, now + self.ttl, cti)
        payload_head = cbor.bstr_head(len(payload))
        # The token up to its signature's bstr head, and the Sig_structure (cose.sig_structure).
        return b"".join((self.head, payload_head, payload)), b"".join((self.to_sign, payload_head, payload)), cti


def finish(unsigned: bytes, signature: bytes) -> bytes:
    """The token: what Minter.prepare returned, then the 64-byte signature as a bstr."""
    return unsigned + b"\x58\x40" + signature
