"""The MQTT envelope: one CBOR array ``[token: bstr, payload: bstr]`` (PROTOCOL.md §12).

Decoded strictly, like a token (deterministic encoding, definite lengths, no
trailing bytes), with the token's and the payload's size bounded before any
decoding.
"""

from __future__ import annotations

from .. import cbor
from ..errors import Malformed, TooLarge
from ..wire import MAX_TOKEN_BYTES

MAX_PAYLOAD_BYTES = 256 * 1024
_HEAD = 9  # the largest CBOR head: 1 byte + 8-byte length


def pack(token: bytes, payload: bytes) -> bytes:
    return cbor.dumps([bytes(token), bytes(payload)])


def unpack(data: bytes, *, max_token: int = MAX_TOKEN_BYTES,
           max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[bytes, bytes]:
    """(token, payload) from an envelope; Malformed or TooLarge otherwise."""
    if len(data) > 1 + 2 * _HEAD + max_token + max_payload:
        raise TooLarge(f"the envelope is larger than its limit ({len(data)} bytes)")
    if not data or data[0] != 0x82:
        raise Malformed("an envelope is a CBOR array [token, payload]")
    value = cbor.loads(bytes(data), max_depth=1, max_items=2, max_string=max(max_token, max_payload))
    token, payload = value
    if type(token) is not bytes or type(payload) is not bytes:
        raise Malformed("an envelope holds two byte strings: [token, payload]")
    if len(token) > max_token:
        raise TooLarge(f"the token is larger than {max_token} bytes")
    if len(payload) > max_payload:
        raise TooLarge(f"the payload is larger than {max_payload} bytes")
    return token, payload
