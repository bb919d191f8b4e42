"""The MQTT envelope: one CBOR array ``[token: bstr, payload: bstr, ?proof: bstr]`` (PROTOCOL.md §12).

The third element is the proof of possession a PoP token needs at its first
hop (§12.1): 20 bytes, time || MAC, for method ``PUBLISH`` and the topic.

Decoded strictly, like a token (deterministic encoding, definite lengths, no
trailing bytes), with the token's and the payload's size bounded before any
decoding.
"""

from __future__ import annotations

from .. import cbor
from ..errors import Malformed, TooLarge
from ..wire import MAX_TOKEN_BYTES, POP_PROOF_BYTES

MAX_PAYLOAD_BYTES = 256 * 1024
_HEAD = 9  # the largest CBOR head: 1 byte + 8-byte length


def pack(token: bytes, payload: bytes, proof: bytes | None = None) -> bytes:
    items = [bytes(token), bytes(payload)]
    if proof is not None:
        items.append(bytes(proof))
    return cbor.dumps(items)


def unpack(data: bytes, *, max_token: int = MAX_TOKEN_BYTES,
           max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, bytes]:
    """(token, payload) from an envelope (a proof, if any, left aside); Malformed or TooLarge otherwise."""
    token, payload, _ = unpack_proof(data, max_token=max_token, max_payload=max_payload)
    return token, payload


def unpack_proof(data: bytes, *, max_token: int = MAX_TOKEN_BYTES,
                 max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, bytes, bytes | None]:
    """(token, payload, proof or None) from an envelope; Malformed or TooLarge otherwise."""
    if len(data) > 1 + 3 * _HEAD + max_token + max_payload + POP_PROOF_BYTES:
        raise TooLarge(f"the envelope is larger than its limit ({len(data)} bytes)")
    if not data or data[0] not in (0x82, 0x83):
        raise Malformed("an envelope is a CBOR array [token, payload, ?proof]")
    value = cbor.loads(bytes(data), max_depth=1, max_items=3, max_string=max(max_token, max_payload))
    token, payload = value[0], value[1]
    proof = value[2] if len(value) == 3 else None
    if type(token) is not bytes or type(payload) is not bytes:
        raise Malformed("an envelope holds byte strings: [token, payload, ?proof]")
    if proof is not None and (type(proof) is not bytes or len(proof) != POP_PROOF_BYTES):
        raise Malformed(f"an envelope's proof is {POP_PROOF_BYTES} bytes")
    if len(token) > max_token:
        raise TooLarge(f"the token is larger than {max_token} bytes")
    if len(payload) > max_payload:
        raise TooLarge(f"the payload is larger than {max_payload} bytes")
    return token, payload, proof
