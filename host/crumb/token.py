"""The token's structure, and the operations that build it.

    token     = [version, authority, *blocks, ?proof]
    authority = COSE_Sign1 signed by an issuer key, payload = CWT claims
    block     = COSE_Sign1 whose external_aad is the previous block's signature
    proof     = 32-byte ephemeral seed (open) | 64-byte seal signature

PROTOCOL.md describes every byte; verification is in verify.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

from . import caveats as cav
from . import cbor, cose
from .claims import Claims, Party
from .errors import BadSignature, ChainInvalid, Malformed, TooLarge, UnsupportedVersion
from .keys import PublicKey, SigningKey, b64u, unb64u
from .scope import encode_scope
from .wire import (
    ALG_EDDSA,
    BLOCK_ATTENUATE,
    BLOCK_ATTEST,
    BLOCK_OPEN,
    COSE_ALG,
    COSE_KID,
    CTI_BYTES,
    FORMAT_VERSION,
    KID_BYTES,
    MAX_BLOCKS,
    MAX_TOKEN_BYTES,
    PUBLIC_KEY_BYTES,
    SEAL_CONTEXT,
    SIGNATURE_BYTES,
)


class Block:
    """One COSE_Sign1 of a token, as raw bytes (decoding is the caller's choice)."""

    __slots__ = ("payload", "protected", "signature")

    def __init__(self, protected: bytes, payload: bytes, signature: bytes) -> None:
        self.protected = protected
        self.payload = payload
        self.signature = signature

    def to_cbor(self) -> list:
        return [self.protected, {}, self.payload, self.signature]


class Token:
    __slots__ = ("authority", "blocks", "proof", "version")

    def __init__(self, authority: Block, blocks: list[Block], proof: bytes | None,
                 version: int = FORMAT_VERSION) -> None:
        self.version = version
        self.authority = authority
        self.blocks = blocks
        self.proof = proof

    def to_bytes(self) -> bytes:
        items: list = [self.version, self.authority.to_cbor()]
        items.extend(b.to_cbor() for b in self.blocks)
        if self.proof is not None:
            items.append(self.proof)
        return cbor.dumps(items)

    @property
    def last_signature(self) -> bytes:
        return self.blocks[-1].signature if self.blocks else self.authority.signature


def to_bytes(token: bytes | bytearray | str) -> bytes:
    """Accept raw CBOR or its base64url text form."""
    if isinstance(token, str):
        try:
            return unb64u(token)
        except ValueError:
            raise Malformed("the token text is not base64url without padding") from None
    return bytes(token)


def to_text(token: bytes) -> str:
    """A token's bytes as text: base64url without padding (HTTP headers, shells, logs)."""
    return b64u(token)


def _bstr(data: bytes, i: int, what: str) -> tuple[bytes, int]:
    n = len(data)
    b = data[i] if i < n else -1
    if 0x40 <= b < 0x58:
        start = i + 1
        end = start + b - 0x40
    elif b == 0x58 and i + 1 < n and data[i + 1] >= 24:
        start = i + 2
        end = start + data[i + 1]
    else:  # longer, non-preferred, truncated or not a bstr: the generic head says which
        mt, length, start = cbor.head(data, i)
        if mt != 2:
            raise Malformed(f"{what} is a byte string")
        end = start + length
    if end > n:
        raise Malformed(f"truncated {what} at offset {start}")
    return data[start:end], end


def split(data: bytes, max_bytes: int = MAX_TOKEN_BYTES) -> Token:
    """Decode a token's structure strictly; no signature is checked here.

    The structure is fixed, so it is read head by head rather than through
    the generic decoder: this is the first thing every verification does.
    """
    n = len(data)
    if n > max_bytes:
        raise TooLarge(f"token is {n} bytes, the limit is {max_bytes}")
    return _split_common(data) or _split_general(data)


def _split_common(data: bytes) -> Token | None:
    """The fast path, the common token: [1, [h'<short protected>', {}, h'<24..255 B>', h'<64 B>']].

    It accepts only canonical bytes and returns None for anything else, which
    then goes the general way; tests/host/test_properties.py holds the two to
    the same result on random and mutated tokens.
    """
    n = len(data)
    if n > 84 and data[0] == 0x82 and data[1] == FORMAT_VERSION and data[2] == 0x84 and 0x40 <= data[3] < 0x58:
        pe = 4 + data[3] - 0x40
        if data[pe] == 0xA0 and data[pe + 1] == 0x58 and data[pe + 2] >= 24:
            ps = pe + 3
            se = ps + data[pe + 2]
            if se + 66 == n and data[se] == 0x58 and data[se + 1] == 0x40:
                return Token(Block(data[4:pe], data[ps:se], data[se + 2:]), [], None)
    return None


def _split_general(data: bytes) -> Token:
    """Any token's structure, head by head (size already checked by split)."""
    n = len(data)
    mt, count, i = cbor.head(data, 0)
    if mt != 4 or count < 2:
        raise Malformed("a token is an array [version, authority, blocks..., proof?]")
    mt, version, i = cbor.head(data, i)
    if mt != 0:
        raise Malformed("the token version is an unsigned integer")
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(f"token format version {version}; this verifier speaks {FORMAT_VERSION}")
    if count > MAX_BLOCKS + 2:
        raise TooLarge(f"token has {count - 2} appended blocks or more, the limit is {MAX_BLOCKS}")
    blocks: list[Block] = []
    proof = None
    for k in range(count - 1):
        if i >= n:
            raise Malformed(f"truncated at offset {i}")
        if data[i] != 0x84:
            if k == count - 2 and k > 0 and data[i] >> 5 == 2:
                proof, i = _bstr(data, i, "the proof")
                if len(proof) not in (32, SIGNATURE_BYTES):
                    raise Malformed("a proof is a 32-byte seed or a 64-byte seal")
                break
            raise Malformed(f"a block is a COSE_Sign1 array of 4 (offset {i})")
        protected, i = _bstr(data, i + 1, "a protected header")
        if i >= n or data[i] != 0xA0:
            raise Malformed(f"the unprotected header is an empty map (offset {i})")
        payload, i = _bstr(data, i + 1, "a payload")
        signature, i = _bstr(data, i, "a signature")
        if len(signature) != SIGNATURE_BYTES:
            raise Malformed("an Ed25519 signature is 64 bytes")
        blocks.append(Block(protected, payload, signature))
    if i != n:
        raise Malformed(f"{n - i} trailing bytes after the token")
    return Token(blocks[0], blocks[1:], proof)


def authority_kid(protected: bytes) -> bytes:
    """The kid from an authority protected header, which must be {1: -8, 4: kid}."""
    header = cbor.loads(protected, max_depth=1, max_items=4)
    if not isinstance(header, dict):
        raise Malformed("the protected header is a map")
    if header.get(COSE_ALG) != ALG_EDDSA:
        raise BadSignature(f"algorithm {header.get(COSE_ALG)!r} is not accepted (only EdDSA, -8)")
    kid = header.get(COSE_KID)
    if len(header) != 2 or not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        raise Malformed("the authority header is exactly {alg: -8, kid: 4 bytes}")
    return kid


def check_block_protected(protected: bytes) -> None:
    if protected == cose.BLOCK_PROTECTED:
        return
    header = cbor.loads(protected, max_depth=1, max_items=4)
    if isinstance(header, dict) and header.get(COSE_ALG, ALG_EDDSA) != ALG_EDDSA:
        raise BadSignature(f"algorithm {header.get(COSE_ALG)!r} is not accepted (only EdDSA, -8)")
    raise Malformed("an appended block's protected header is exactly {alg: -8}")


def block_body(block: Block) -> list:
    """Decode an appended block's payload: [kind, ...]."""
    body = cbor.loads(block.payload, max_depth=5)
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise Malformed("a block payload is [kind, ...]")
    return body


def claims_of(token: Token) -> Claims:
    """Decode the authority claims without verifying anything."""
    return Claims.decode(token.authority.payload)


# -- building -------------------------------------------------------------------------


def _party(name: str, key: PublicKey, refs: str) -> Party:
    if refs not in ("key", "kid"):
        raise ValueError("hop_refs is 'key' (self-contained) or 'kid' (verifier resolves)")
    return Party(name, key.raw if refs == "key" else key.kid)


def mint(
    key: SigningKey,
    *,
    scope: Iterable[tuple[str, object]],
    sub: str | None = None,
    ttl: int = 60,
    uses: int = 1,
    iss: str | None = None,
    aud: str | None = None,
    nbf: int | None = None,
    chain: Sequence[tuple[str, PublicKey]] = (),
    attenuators: Sequence[tuple[str, PublicKey]] = (),
    caveats: Sequence[list] = (),
    hop_refs: str = "key",
    open: bool | SigningKey = False,
    now: int | None = None,
    cti: bytes | None = None,
    cnf: dict | None = None,
) -> bytes:
    """Mint a token: the authority block, signed by the issuer's key.

    Args:
        key: the issuer's signing key; its kid goes in the protected header.
        scope: ``[(resource, permission), ...]``; a permission is an
            operation name, a list of them, or a REST method bitmask
            (PROTOCOL.md §4). A resource ending in ``*`` is a prefix.
        sub: the subject (the device id), or None.
        ttl: seconds from ``now`` to expiry (> 0).
        uses: uses per hop (1: single use).
        iss, aud, nbf: the registered claims, or None.
        chain: ``[(hop name, PublicKey), ...]``, the hops that must attest,
            in order.
        attenuators: ``[(name, PublicKey), ...]``, keys that must each append
            exactly one attenuation block.
        caveats: predicates on the request (``crumb.caveat(...)``).
        hop_refs: ``"key"`` embeds each hop's public key; ``"kid"`` only its
            4-byte kid (smaller; verifiers must be given the node keys).
        open: True lets any holder attenuate (the proof travels at the end
            of the token); a SigningKey is used as the first ephemeral key.
        now: the issue time (unix seconds); default: the clock.
        cti: the 8-byte token id; default: random.
        cnf: a proof-of-possession token's cnf claim (``crumb.pop.CnfSealer.cnf``).

    Returns:
        The token's bytes (``to_text`` makes them base64url text).

    Raises:
        ValueError: ttl <= 0 or uses < 1.
        CrumbError: ``malformed`` or ``too_large`` when the claims would not
            verify (crumb refuses to sign what a verifier would reject).
    """
    iat = int(time.time() if now is None else now)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if uses < 1:
        raise ValueError("uses must be 1 or more")
    claims = Claims(
        exp=iat + int(ttl), iat=iat, cti=cti if cti is not None else os.urandom(CTI_BYTES),
        scope=encode_scope(scope), iss=iss, sub=sub, aud=aud, nbf=nbf, uses=uses,
        chain=[_party(n, k, hop_refs) for n, k in chain],
        attenuators=[_party(n, k, hop_refs) for n, k in attenuators],
        caveats=[list(c) for c in caveats],
    )
    ephemeral = open if isinstance(open, SigningKey) else (SigningKey.generate() if open else None)
    if ephemeral is not None:
        claims.open_key = ephemeral.public.raw
    claims.cnf = cnf
    payload = cbor.dumps(claims.to_map())
    Claims.decode(payload)  # refuse to sign what a verifier would reject
    protected = cose.authority_protected(key.kid)
    p, _, payload, sig = cose.sign(key, protected, payload)
    token = Token(Block(p, payload, sig), [], ephemeral.seed if ephemeral else None)
    return token.to_bytes()


def _append(token: Token, key: SigningKey, body: list) -> None:
    _, _, payload, sig = cose.sign(key, cose.BLOCK_PROTECTED, cbor.dumps(body), token.last_signature)
    token.blocks.append(Block(cose.BLOCK_PROTECTED, payload, sig))


def _matches(party: Party, key: PublicKey) -> bool:
    return party.keyref == (key.raw if len(party.keyref) == PUBLIC_KEY_BYTES else key.kid)


def attest(token: bytes | str, key: SigningKey, hop: str) -> bytes:
    """Countersign as declared hop ``hop``: "this token passed through me".

    Args:
        token: the token, as bytes or base64url text.
        key: this hop's signing key, the one the token declares for ``hop``.
        hop: this hop's name in the token's chain.

    Returns:
        The token with one more attestation block.

    Raises:
        CrumbError: ``chain_invalid`` when ``hop`` is not declared, ``key``
            is not its key, or the hops before it have not all attested;
            ``malformed`` / ``too_large`` for a token that does not parse.
    """
    tok = split(to_bytes(token))
    claims = claims_of(tok)
    index = next((i for i, p in enumerate(claims.chain) if p.name == hop), None)
    if index is None:
        raise ChainInvalid(f"hop {hop!r} is not declared in this token's chain")
    if not _matches(claims.chain[index], key.public):
        raise ChainInvalid(f"key {key.kid.hex()} is not the declared key of hop {hop!r}")
    attested = sum(1 for b in tok.blocks if block_body(b)[0] == BLOCK_ATTEST)
    if attested != index:
        raise ChainInvalid(f"hop {hop!r} is hop {index + 1} but {attested} hop(s) have attested")
    _append(tok, key, [BLOCK_ATTEST, index])
    return tok.to_bytes()


def attenuate(token: bytes | str, key: SigningKey, caveats: Sequence[list]) -> bytes:
    """Narrow a token as the declared attenuator holding ``key`` (once per attenuator).

    Args:
        token: the token, as bytes or base64url text.
        key: the signing key of an attenuator the token declares.
        caveats: the caveats to add (``crumb.caveat(...)``); they can only narrow.

    Returns:
        The token with the attenuation block appended.

    Raises:
        CrumbError: ``chain_invalid`` when ``key`` is not a declared
            attenuator or has attenuated already; ``malformed`` /
            ``unknown_caveat`` for caveats that are not well formed.
    """
    tok = split(to_bytes(token))
    claims = claims_of(tok)
    index = next((i for i, p in enumerate(claims.attenuators) if _matches(p, key.public)), None)
    if index is None:
        raise ChainInvalid(f"key {key.kid.hex()} is not a declared attenuator of this token")
    for b in tok.blocks:
        body = block_body(b)
        if body[0] == BLOCK_ATTENUATE and body[1] == index:
            raise ChainInvalid(f"attenuator {claims.attenuators[index].name!r} has already attenuated")
    _append(tok, key, [BLOCK_ATTENUATE, index, cav.check_list([list(c) for c in caveats])])
    return tok.to_bytes()


def attenuate_open(token: bytes | str, caveats: Sequence[list], next_key: SigningKey | None = None) -> bytes:
    """Narrow an open token as any holder: the block is signed with the token's ephemeral key.

    Args:
        token: an open, unsealed token (minted with ``open=True``).
        caveats: the caveats to add.
        next_key: the next ephemeral key (default: a new one); its seed
            becomes the token's proof.

    Returns:
        The token with the block appended and the proof moved on.

    Raises:
        CrumbError: ``chain_invalid`` when the token is not open or is sealed.
    """
    tok = split(to_bytes(token))
    if tok.proof is None or len(tok.proof) != 32:
        raise ChainInvalid("only an open, unsealed token can be attenuated without a named key")
    current = SigningKey(tok.proof)
    nxt = next_key or SigningKey.generate()
    _append(tok, current, [BLOCK_OPEN, cav.check_list([list(c) for c in caveats]), nxt.public.raw])
    tok.proof = nxt.seed
    return tok.to_bytes()


def open_key_block_signature(tok: Token) -> bytes:
    """Signature of the block that named the current ephemeral key (what a seal signs)."""
    sig = tok.authority.signature
    for b in tok.blocks:
        if block_body(b)[0] == BLOCK_OPEN:
            sig = b.signature
    return sig


def seal(token: bytes | str) -> bytes:
    """Close an open token: nobody can attenuate it further.

    Args:
        token: an open, unsealed token.

    Returns:
        The token with its proof replaced by the seal signature.

    Raises:
        CrumbError: ``chain_invalid`` when the token is not open or is sealed already.
    """
    tok = split(to_bytes(token))
    if tok.proof is None or len(tok.proof) != 32:
        raise ChainInvalid("only an open, unsealed token can be sealed")
    tok.proof = SigningKey(tok.proof).sign(SEAL_CONTEXT + open_key_block_signature(tok))
    return tok.to_bytes()
