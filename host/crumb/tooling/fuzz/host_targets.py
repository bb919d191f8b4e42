"""Targets for the token core: the host CBOR decoder, host against device decoder, the verifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import cbor
from ...claims import Claims, Party, loads_claims
from ...cose import sig_structure
from ...errors import CrumbError, Replayed
from ...keys import SigningKey
from ...replay import MemoryReplayStore
from ...token import Block, block_body, open_key_block_signature, split
from ...verify import Verifier
from ...wire import BLOCK_ATTENUATE, BLOCK_ATTEST, BLOCK_OPEN, SEAL_CONTEXT
from . import fixtures as fx
from .harness import Finding

# -- the host CBOR decoder ------------------------------------------------------------


def _cbor_setup() -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        try:
            value = cbor.loads(data)
        except CrumbError:
            return
        # One value, one encoding: what the strict decoder accepts, the encoder writes back byte for byte.
        again = cbor.dumps(value)
        if again != data:
            raise Finding(f"decoded {data.hex()} but the encoder writes {again.hex()}")

    return run


def cbor_seeds() -> dict[str, bytes]:
    tokens = fx.valid_tokens()
    return {
        "token-plain": tokens["plain"],
        "token-chain3": tokens["chain3"],
        "map-mixed": cbor.dumps({1: "a", -65537: b"\x00" * 20, "k": [True, False, None, -1, 2 ** 64 - 1]}),
        "nested": cbor.dumps([[[[[1]]]]]),
        "strings": cbor.dumps(["é€𝄞", b"", "", b"\xff" * 30, "x" * 300]),
        "ints": cbor.dumps([0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -24, -25, -(2 ** 64)]),
    }


# -- the host decoder against the device decoder --------------------------------------

# Both decoders with the same limits: nesting 16, strings 4096 bytes. The device
# counts items over the whole value (512), the host per container; an input of
# fewer than 512 bytes cannot reach either count, so only the decoding rules differ.
DIFF_MAX_BYTES = 511


def _shape(v: Any) -> Any:
    """A value with its types spelled out (False == 0 in Python; not here)."""
    if isinstance(v, bool) or v is None:
        return ("simple", v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(v))
    if isinstance(v, str):
        return ("text", v)
    if isinstance(v, list):
        return ("array", tuple(_shape(x) for x in v))
    if isinstance(v, dict):
        return ("map", tuple((_shape(k), _shape(x)) for k, x in v.items()))
    return ("?", repr(v))


def _major(data: bytes) -> str:
    """What the first item is, for telling findings apart: 'a map', 'a simple value', ..."""
    names = ["an unsigned int", "a negative int", "a byte string", "a text string", "an array", "a map", "a tag",
             "a simple value"]
    return names[data[0] >> 5] if data else "nothing"


def _cbor_diff_setup() -> Callable[[bytes], None]:
    from ucrumb import cbor as ucbor

    def run(data: bytes) -> None:
        data = data[:DIFF_MAX_BYTES]
        host: Any
        device: Any
        try:
            host = ("ok", _shape(cbor.loads(data, max_depth=16, max_items=512, max_string=4096)))
        except CrumbError:
            host = ("rejected",)
        try:
            device = ("ok", _shape(ucbor.loads(data)))
        except ucbor.CBORError:
            device = ("rejected",)
        if host != device:
            kind = ("values differ" if host[0] == device[0] == "ok" else f"only the {'host' if host[0] == 'ok' else 'device'}"
                    f" accepts {_major(data)}")
            raise Finding(f"host and device decoders disagree on {data.hex()}: host {host}, device {device}", kind)

    return run


# -- the verifier ---------------------------------------------------------------------

# (resource, operation, hop): byte 0 of an input picks one (bits 1-3).
REQUESTS = [
    ("/sensors/temp01", "read", None),
    ("/sensors/temp01", "read", "ingest"),
    ("/config/a", "GET", None),
    ("/sensors/temp01", "write", None),
    ("/sensors/temp01", "publish", "storage"),
    ("/sensors/temp01", "read", "gateway"),
    ("/other", "read", None),
    ("/sensors/t", "POST", None),
]


def _signer(party: Party) -> SigningKey | None:
    for key in fx.BY_PUBLIC.values():
        if party.keyref in (key.public.raw, key.public.kid):
            return key
    return None


def resign(data: bytes) -> bytes:
    """The token in ``data`` with every signature made again by the key it names.

    A mutated payload then passes the signature checks, so the fuzzer reaches
    what lies behind them: claims, scope, caveats, chain and proof checks.
    Raises the verifier's typed errors when the structure does not split.
    """
    tok = split(data)
    auth = tok.authority
    sig = fx.ISSUER.sign(sig_structure(auth.protected, b"", auth.payload))
    tok.authority = Block(auth.protected, auth.payload, sig)
    try:
        claims: Claims | None = Claims.decode(auth.payload)
    except CrumbError:
        claims = None
    open_key = claims.open_key if claims is not None else None
    prev = sig
    for i, block in enumerate(tok.blocks):
        key = None
        try:
            body: list | None = block_body(block)
        except CrumbError:
            body = None
        if body is not None and claims is not None:
            index = body[1] if len(body) > 1 and type(body[1]) is int else -1
            if body[0] == BLOCK_ATTEST and 0 <= index < len(claims.chain):
                key = _signer(claims.chain[index])
            elif body[0] == BLOCK_ATTENUATE and 0 <= index < len(claims.attenuators):
                key = _signer(claims.attenuators[index])
            elif body[0] == BLOCK_OPEN and open_key is not None:
                key = fx.BY_PUBLIC.get(open_key)
                if len(body) == 3 and isinstance(body[2], bytes):
                    open_key = body[2]
        sig = key.sign(sig_structure(block.protected, prev, block.payload)) if key else block.signature
        tok.blocks[i] = Block(block.protected, block.payload, sig)
        prev = sig
    if tok.proof is not None and len(tok.proof) == 64 and open_key in fx.BY_PUBLIC:
        try:
            tok.proof = fx.BY_PUBLIC[open_key].sign(SEAL_CONTEXT + open_key_block_signature(tok))
        except CrumbError:
            pass
    return tok.to_bytes()


def _verifier() -> Verifier:
    # Fresh per input: a replay store carried over would make one input's answer depend on the last.
    clock = lambda: fx.NOW
    return Verifier([fx.ISSUER.public], node_keys=[k.public for k in fx.HOPS], clock=clock, audience="svc",
                    replay=MemoryReplayStore(1024, fence=False, clock=clock))


def token_input(data: bytes) -> tuple[bytes, str, str, str | None] | None:
    """A verify target's input -> (token, resource, operation, hop), or None for no input.

    Byte 0 chooses: bit 0, re-sign the rest with the keys it names (resign); bits 1-3,
    the request (REQUESTS). A token that does not split is left as it is: the verifiers
    must say so themselves."""
    if not data:
        return None
    flags, token = data[0], data[1:]
    resource, operation, hop = REQUESTS[(flags >> 1) & 7]
    if flags & 1:
        try:
            token = resign(token)
        except CrumbError:
            pass
    return token, resource, operation, hop


def _verify_setup() -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        given = token_input(data)
        if given is None:
            return
        token, resource, operation, hop = given
        _claims_paths_agree(token)
        verifier = _verifier()
        try:
            verified = verifier.verify(token, resource, operation, hop=hop)
        except CrumbError:
            return
        # Accepted: its uses at this hop are then spent after exactly `uses` verifications.
        uses = verified.claims.uses
        if uses > 8:
            return
        for _ in range(uses - 1):
            verifier.verify(token, resource, operation, hop=hop)
        try:
            verifier.verify(token, resource, operation, hop=hop)
        except Replayed:
            return
        raise Finding(f"a token with {uses} use(s) was accepted {uses + 1} times at hop {hop!r}")

    return run


def _claims_paths_agree(token: bytes) -> None:
    """The claims decoder's fast path and its general path: one answer for the same payload."""
    try:
        payload = split(token).authority.payload
    except CrumbError:
        return
    outcomes = []
    for decode in (Claims.decode, lambda p: Claims.parse(loads_claims(p))):
        try:
            outcomes.append(("ok", _shape(decode(payload).to_map())))
        except CrumbError as e:
            outcomes.append(("rejected", e.code))
    if outcomes[0] != outcomes[1]:
        raise Finding(f"Claims.decode's fast path says {outcomes[0]}, the general path {outcomes[1]}, "
                      f"for payload {payload.hex()}")


def verify_seeds() -> dict[str, bytes]:
    out = {}
    for name, token in fx.valid_tokens().items():
        out[f"{name}-as-is"] = bytes((0,)) + token
        out[f"{name}-resigned"] = bytes((1,)) + token
    out["chain3-at-ingest-resigned"] = bytes((1 | 1 << 1,)) + fx.valid_tokens()["chain3"]
    return out
