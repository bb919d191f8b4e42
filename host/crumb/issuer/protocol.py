"""The /token wire format: requests, responses, the device MAC and key derivation.

PROTOCOL.md ("Token endpoint") is the prose for this module. In short, a
device request is one deterministic CBOR map (RFC 8949 §4.2.1):

    {  5: audience (tstr, optional)         ACE "audience"
       9: scope                              ACE "scope": [resource, permission]
                                             or [[resource, permission], ...] (a batch)
      24: client_id (tstr)                   ACE "client_id": the device id
      -1: nonce (bstr, 6..16 bytes)          crumb: device nonce
      -2: time (uint)                        crumb: device unix time, seconds
      -3: count (uint, 2..32, optional)      crumb: n tokens for one scope
      -4: mac (bstr, 16 bytes) }             crumb: HMAC-SHA256(device key, request
                                             without -4)[:16]

crumb's extensions use negative keys so they can never collide with a
parameter ACE registers. In deterministic order the MAC (-4, 0x23) sorts
after every other key, so the MAC input is the request with its map header
decremented and the last 18 bytes removed: a device can MAC as it writes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from typing import Any, NamedTuple, Union

from .. import cbor
from ..errors import CrumbError, Malformed
from ..keys import b64u, unb64u
from ..scope import check_permission, check_resource
from ..wire import (  # the request's keys and sizes are re-exported here: protocol.REQ_SCOPE etc.
    ACE_NAMES, CBOR_TYPES, DEVICE_KEY_LABEL, ERR_CODE, ERR_DESCRIPTION, ERR_ERROR, ERR_RETRY_AFTER, JSON_TYPE,
    MAC_BYTES, MAX_BATCH, MAX_CLIENT_ID, MAX_COUNT, MAX_PERMISSION_OPS, MAX_STRING, NONCE_MAX, NONCE_MIN,
    REQ_AUDIENCE, REQ_CLIENT_ID, REQ_COUNT, REQ_MAC, REQ_NONCE, REQ_SCOPE, REQ_TIME, REST_METHODS,
    RESP_ACCESS_TOKEN, RESP_EXPIRES_IN, RESP_TIME, RESP_TOKENS, RESP_USES,
)
from .codes import Refusal

_DEVICE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:@-]{{0,{MAX_CLIENT_ID - 1}}}\Z")
_ALLOWED_KEYS = frozenset((REQ_AUDIENCE, REQ_SCOPE, REQ_CLIENT_ID, REQ_NONCE, REQ_TIME, REQ_COUNT, REQ_MAC))

Permission = Union[str, list, int]


# -- keys and MAC ---------------------------------------------------------------------


def check_device_id(device_id: object) -> str:
    """Device ids are short printable ASCII, safe in logs, file names and Redis keys."""
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise ValueError(f"a device id is 1-{MAX_CLIENT_ID} characters of A-Z a-z 0-9 . _ : @ -, "
                         "starting with a letter or digit")
    return device_id


def derive_device_key(master: bytes, device_id: str) -> bytes:
    """device key = HMAC-SHA256(master secret, "crumb device key v1" || device id (UTF-8)).

    The label has a fixed length, so the concatenation is unambiguous; the
    issuer recomputes the key per request and stores no per-device secret.
    """
    return hmac.digest(master, DEVICE_KEY_LABEL + device_id.encode(), "sha256")


def mac_of(device_key: bytes, mac_input: bytes) -> bytes:
    return hmac.digest(device_key, mac_input, "sha256")[:MAC_BYTES]


class DeviceMacs:
    """Computes device MACs, keeping each device's keyed HMAC state in a bounded cache.

    Derivation is deterministic, so this is a cache (in memory, never
    written anywhere), not a table of secrets: dropping it changes nothing
    but the time to answer. It saves a key derivation and the HMAC key
    set-up per request; the MAC itself is hashlib's HMAC-SHA256, compared
    with hmac.compare_digest (tests hold it to mac_of).
    """

    def __init__(self, master: bytes, max_entries: int = 65_536) -> None:
        self.master = master
        self.max_entries = max_entries
        self._states: dict[str, Any] = {}

    def _state(self, device_id: str) -> Any:
        state = self._states.get(device_id)
        if state is None:
            if len(self._states) >= self.max_entries:
                self._states.clear()
            state = hmac.new(derive_device_key(self.master, device_id), digestmod=hashlib.sha256)
            self._states[device_id] = state
        return state

    def mac(self, device_id: str, mac_input: bytes) -> bytes:
        h = self._state(device_id).copy()
        h.update(mac_input)
        return h.digest()[:MAC_BYTES]

    def verify(self, device_id: str, mac_input: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the device's MAC of ``mac_input``, compared in constant time."""
        return hmac.compare_digest(self.mac(device_id, mac_input), mac)


def encode_uint(value: int) -> bytes:
    """Preferred CBOR encoding of an unsigned integer (the issuer writes many)."""
    if value < 24:
        return bytes((value,))
    if value < 0x100:
        return bytes((0x18, value))
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\x1a" + value.to_bytes(4, "big")
    return cbor.dumps(value)


# -- the request ----------------------------------------------------------------------


class TokenRequest(NamedTuple):
    client_id: str
    scopes: list            # [(resource, permission), ...]
    nonce: bytes
    time: int
    count: int              # tokens per scope (only with a single scope)
    audience: str | None
    mac: bytes
    mac_input: bytes        # the canonical request without the MAC
    batch: bool             # answer with the batch form (-5)

    @property
    def n_tokens(self) -> int:
        return len(self.scopes) * self.count


def _malformed(message: str) -> Refusal:
    return Refusal("malformed", message)


def _head(data: bytes, i: int) -> tuple[int, int, int]:
    # Short heads inline (nearly every head of a request); longer ones through the
    # strict core reader, which refuses non-preferred and indefinite forms.
    b = data[i]
    if b & 31 < 24:
        return b >> 5, b & 31, i + 1
    return cbor.head(data, i)


def _text(data: bytes, i: int, what: str, limit: int) -> tuple[str, int]:
    mt, length, i = _head(data, i)
    if mt != 3:
        raise _malformed(f"{what} is a text string")
    if length > limit:
        raise _malformed(f"{what} is at most {limit} bytes")
    end = i + length
    if end > len(data):
        raise _malformed(f"truncated {what}")
    try:
        return data[i:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise _malformed(f"{what} is not valid UTF-8") from None


def _bytes(data: bytes, i: int, what: str) -> tuple[bytes, int]:
    mt, length, i = _head(data, i)
    if mt != 2:
        raise _malformed(f"{what} is a byte string")
    end = i + length
    if end > len(data):
        raise _malformed(f"truncated {what}")
    return data[i:end], end


def _uint(data: bytes, i: int, what: str) -> tuple[int, int]:
    mt, value, i = _head(data, i)
    if mt != 0:
        raise _malformed(f"{what} is an unsigned integer")
    return value, i


def _permission(data: bytes, i: int) -> tuple[Permission, int]:
    mt = data[i] >> 5
    if mt == 3:
        return _text(data, i, "an operation", MAX_STRING)
    if mt == 0:
        return _uint(data, i, "a method bitmask")
    if mt == 4:
        _, length, i = _head(data, i)
        if not 2 <= length <= MAX_PERMISSION_OPS:
            raise _malformed(f"a permission array holds 2 to {MAX_PERMISSION_OPS} operations")
        ops = []
        for _ in range(length):
            op, i = _text(data, i, "an operation", MAX_STRING)
            ops.append(op)
        return ops, i
    raise _malformed("a permission is an operation, an array of operations or a method bitmask")


def _scope(data: bytes, i: int) -> tuple[list, bool, int]:
    mt, length, i = _head(data, i)
    if mt != 4:
        raise _malformed("scope is [resource, permission] or an array of them")
    if data[i] >> 5 == 3:  # [resource, permission]: one scope
        if length != 2:
            raise _malformed("a scope entry is [resource, permission]")
        resource, i = _text(data, i, "a resource", MAX_STRING)
        perm, i = _permission(data, i)
        return [(resource, perm)], False, i
    if not 2 <= length <= MAX_BATCH:
        raise _malformed(f"a batch scope holds 2 to {MAX_BATCH} entries (one scope is written as [resource, permission])")
    entries = []
    for _ in range(length):
        mt, pair, i = _head(data, i)
        if mt != 4 or pair != 2:
            raise _malformed("a scope entry is [resource, permission]")
        resource, i = _text(data, i, "a resource", MAX_STRING)
        perm, i = _permission(data, i)
        entries.append((resource, perm))
    return entries, True, i


# Request keys by their encoded byte (all one byte but client_id, 0x18 0x18).
_KEY_BYTES = {cbor.dumps(key)[0]: key for key in sorted(_ALLOWED_KEYS - {REQ_CLIENT_ID})}


def parse_cbor_request(data: bytes) -> TokenRequest:
    """Decode a device request strictly (deterministic CBOR, known keys, bounded).

    Two implementations, no more: _parse_common, the fast path for the one
    shape devices send, and _parse_cbor, the general parser, which decides
    everything the fast path steps aside from. A differential test holds the
    fast path to the general one (tests/issuer/test_differential.py).
    """
    try:
        common = _parse_common(data)
    except IndexError:  # runs past the end: the general parser says where
        common = None
    if common is not None:
        return common
    try:
        return _parse_cbor(data)
    except IndexError:  # every read past the end lands here: one check instead of many
        raise _malformed("truncated request") from None
    except Malformed as e:  # from cbor.head: non-preferred, indefinite, truncated
        raise _malformed(e.message) from None


def _short_text(data: bytes, i: int, limit: int) -> tuple[str, int] | None:
    """A text string of 1..limit bytes (limit <= 255) in preferred form, or None."""
    h = data[i]
    if 0x61 <= h <= 0x77:
        start, end = i + 1, i + 1 + h - 0x60
    elif h == 0x78 and 24 <= data[i + 1] <= limit:
        start, end = i + 2, i + 2 + data[i + 1]
    else:
        return None
    if end > len(data):
        return None
    try:
        return data[start:end].decode("utf-8"), end
    except UnicodeDecodeError:
        return None


def _parse_common(data: bytes) -> TokenRequest | None:
    """The request nearly every device sends, or None to leave it to the general parser.

    {9: [resource, operation or method mask], 24: client_id, -1: nonce,
    -2: time (4-byte uint), -4: mac}, its key bytes written out (those of
    wire.REQ_*: a test checks build_request's requests take this path).
    Whatever this returns, _parse_cbor returns too for the same bytes (a
    differential test checks it); it only skips the general parser's
    per-field dispatch, which was the largest single cost of a token request
    after the signature.
    """
    n = len(data)
    if n < 40 or data[0] != 0xA5 or data[1] != 0x09 or data[2] != 0x82 or data[n - 18] != 0x23 \
            or data[n - 17] != 0x50:
        return None
    got = _short_text(data, 3, MAX_STRING)
    if got is None:
        return None
    resource, i = got
    h = data[i]
    if h >> 5 == 3:
        got = _short_text(data, i, MAX_STRING)
        if got is None:
            return None
        perm, i = got
    elif 1 <= h <= 0x17:
        perm, i = h, i + 1
    elif h == 0x18 and data[i + 1] >= 24:
        perm, i = data[i + 1], i + 2
    else:
        return None
    if data[i] != 0x18 or data[i + 1] != 0x18:
        return None
    got = _short_text(data, i + 2, MAX_CLIENT_ID)
    if got is None:
        return None
    client_id, i = got
    h = data[i + 1]
    if data[i] != 0x20 or not 0x40 + NONCE_MIN <= h <= 0x40 + NONCE_MAX:
        return None
    end = i + 2 + h - 0x40
    if end + 6 != n - 18 or data[end] != 0x21 or data[end + 1] != 0x1A:
        return None
    time_ = int.from_bytes(data[end + 2:end + 6], "big")
    if time_ < 0x10000 or not _DEVICE_ID.match(client_id):
        return None
    try:
        check_resource(resource)
        check_permission(perm)
    except CrumbError:
        return None
    mac_at = n - 18
    return TokenRequest(client_id, [(resource, perm)], data[i + 2:end], time_, 1, None, data[mac_at + 2:],
                        b"\xa4" + data[1:mac_at], False)


def _parse_cbor(data: bytes) -> TokenRequest:
    n = len(data)
    first = data[0]
    count = first & 31
    if first >> 5 != 5 or count >= 24:
        raise _malformed("a token request is a CBOR map")
    if count > len(_ALLOWED_KEYS):
        raise _malformed(f"a token request has at most {len(_ALLOWED_KEYS)} parameters")
    i = 1
    last = -1  # encoded key bytes are all below 0x24 and strictly increasing
    fields: dict[int, Any] = {}
    mac_at = -1
    batch = False
    for _ in range(count):
        start = i
        kb = data[i]
        if kb == 0x18:
            if data[i + 1] != 0x18:
                raise _malformed(f"unknown or non-preferred request parameter at offset {start}")
            key, order, i = REQ_CLIENT_ID, 0x1818, i + 2
        else:
            key = _KEY_BYTES.get(kb)
            if key is None:
                raise _malformed(f"unknown request parameter at offset {start}")
            order, i = kb << 8, i + 1
        if order <= last:
            raise _malformed(f"request parameter {key} is duplicate or out of deterministic order")
        last = order
        if key == REQ_NONCE:
            fields[key], i = _bytes(data, i, "nonce")
        elif key == REQ_TIME:
            fields[key], i = _uint(data, i, "time")
        elif key == REQ_SCOPE:
            fields[key], batch, i = _scope(data, i)
        elif key == REQ_CLIENT_ID:
            fields[key], i = _text(data, i, "client_id", MAX_CLIENT_ID)
        elif key == REQ_MAC:
            mac_at = start
            fields[key], i = _bytes(data, i, "mac")
        elif key == REQ_AUDIENCE:
            fields[key], i = _text(data, i, "audience", MAX_STRING)
        else:
            fields[key], i = _uint(data, i, "count")
    if i != n:
        raise _malformed(f"{n - i} trailing bytes after the request")
    # -4 sorts last, so the MAC input is everything before it under a header one smaller.
    mac_input = bytes((0xA0 | (count - 1),)) + data[1:mac_at] if mac_at > 0 else b""
    return _finish(fields, mac_input, batch)


def _finish(fields: dict, mac_input: bytes, batch: bool) -> TokenRequest:
    for key, name in ((REQ_CLIENT_ID, "client_id"), (REQ_SCOPE, "scope"), (REQ_NONCE, "nonce"),
                      (REQ_TIME, "time"), (REQ_MAC, "mac")):
        if key not in fields:
            raise _malformed(f"the request has no {name}")
    client_id = fields[REQ_CLIENT_ID]
    if not _DEVICE_ID.match(client_id):
        raise _malformed(f"client_id is 1-{MAX_CLIENT_ID} characters of A-Z a-z 0-9 . _ : @ -")
    nonce, mac = fields[REQ_NONCE], fields[REQ_MAC]
    if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise _malformed(f"the nonce is {NONCE_MIN} to {NONCE_MAX} bytes")
    if len(mac) != MAC_BYTES:
        raise _malformed(f"the mac is {MAC_BYTES} bytes")
    scopes = fields[REQ_SCOPE]
    try:
        for resource, perm in scopes:
            check_resource(resource)
            check_permission(perm)
    except CrumbError as e:
        raise _malformed(e.message) from None
    count = fields.get(REQ_COUNT, 1)
    if REQ_COUNT in fields:
        if not 2 <= count <= MAX_COUNT:
            raise _malformed(f"count is 2 to {MAX_COUNT} (absent means 1)")
        if batch:
            raise _malformed("count applies to a single scope, not to a batch of scopes")
        batch = True
    return TokenRequest(client_id, scopes, nonce, fields[REQ_TIME], count, fields.get(REQ_AUDIENCE),
                        mac, mac_input, batch)


# JSON: the same request with names instead of numbers, bytes as base64url.
_JSON_KEYS = {"client_id": REQ_CLIENT_ID, "audience": REQ_AUDIENCE, "scope": REQ_SCOPE,
              "nonce": REQ_NONCE, "time": REQ_TIME, "count": REQ_COUNT, "mac": REQ_MAC}


def _json_scope(value: object) -> tuple[list, bool]:
    def perm(p: object) -> Permission:
        if isinstance(p, bool) or not isinstance(p, (str, int, list)):
            raise _malformed("a permission is an operation, an array of operations or a method bitmask")
        if isinstance(p, list) and (not 2 <= len(p) <= MAX_PERMISSION_OPS or not all(isinstance(o, str) for o in p)):
            raise _malformed(f"a permission array holds 2 to {MAX_PERMISSION_OPS} operations")
        return p

    if not isinstance(value, list) or not value:
        raise _malformed("scope is [resource, permission] or an array of them")
    if isinstance(value[0], str):
        if len(value) != 2:
            raise _malformed("a scope entry is [resource, permission]")
        return [(value[0], perm(value[1]))], False
    if not 2 <= len(value) <= MAX_BATCH:
        raise _malformed(f"a batch scope holds 2 to {MAX_BATCH} entries")
    out = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
            raise _malformed("a scope entry is [resource, permission]")
        out.append((entry[0], perm(entry[1])))
    return out, True


def parse_json_request(data: bytes) -> TokenRequest:
    """A non-device client's request: JSON names, base64url bytes, the same MAC."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise _malformed("the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _malformed("a token request is a JSON object")
    fields: dict[int, Any] = {}
    batch = False
    for name, value in doc.items():
        key = _JSON_KEYS.get(name)
        if key is None:
            raise _malformed(f"unknown request parameter {name!r}")
        if key in (REQ_CLIENT_ID, REQ_AUDIENCE):
            if not isinstance(value, str) or len(value.encode()) > (MAX_CLIENT_ID if key == REQ_CLIENT_ID else MAX_STRING):
                raise _malformed(f"{name} is a short text string")
            fields[key] = value
        elif key in (REQ_NONCE, REQ_MAC):
            try:
                fields[key] = unb64u(value) if isinstance(value, str) else None
            except ValueError:
                fields[key] = None
            if fields[key] is None:
                raise _malformed(f"{name} is base64url text without padding")
        elif key in (REQ_TIME, REQ_COUNT):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
                raise _malformed(f"{name} is an unsigned integer")
            fields[key] = value
        else:
            fields[key], batch = _json_scope(value)
    canonical = {k: v for k, v in fields.items() if k != REQ_MAC}
    if REQ_SCOPE in canonical:
        canonical[REQ_SCOPE] = _wire_scope(canonical[REQ_SCOPE], batch)
    return _finish(fields, cbor.dumps(canonical), batch)


def _wire_scope(scopes: list, batch: bool) -> list:
    if not batch and len(scopes) == 1:
        return [scopes[0][0], scopes[0][1]]
    return [[r, p] for r, p in scopes]


def build_request(device_id: str, device_key: bytes, scopes: list, *, count: int = 1,
                  audience: str | None = None, nonce: bytes | None = None,
                  now: int | None = None, nonce_bytes: int = 8) -> bytes:
    """Build a signed CBOR request (what ucrumb does on the device).

    ``scopes`` is ``[(resource, permission)]``; one entry is the compact
    single form, several are a batch.
    """
    m: dict[int, Any] = {
        REQ_CLIENT_ID: device_id,
        REQ_SCOPE: _wire_scope(list(scopes), len(scopes) > 1),
        REQ_NONCE: nonce if nonce is not None else os.urandom(nonce_bytes),
        REQ_TIME: int(time.time()) if now is None else now,
    }
    if audience is not None:
        m[REQ_AUDIENCE] = audience
    if count != 1:
        m[REQ_COUNT] = count
    body = cbor.dumps(m)
    m[REQ_MAC] = mac_of(device_key, body)
    return cbor.dumps(m)


def build_json_request(device_id: str, device_key: bytes, scopes: list, *, count: int = 1,
                       audience: str | None = None, nonce: bytes | None = None,
                       now: int | None = None) -> bytes:
    """The JSON form of build_request (same MAC, over the canonical CBOR)."""
    m = cbor.loads(build_request(device_id, device_key, scopes, count=count, audience=audience,
                                 nonce=nonce, now=now))
    names = {v: k for k, v in _JSON_KEYS.items()}
    doc = {names[k]: (b64u(v) if isinstance(v, bytes) else v) for k, v in m.items()}
    return json.dumps(doc).encode()


# -- responses ------------------------------------------------------------------------


class Issued(NamedTuple):
    token: bytes
    expires_in: int
    uses: int
    cti: bytes
    scope: tuple


_u = encode_uint


def token_response_cbor(issued: list[Issued], now: int, batch: bool) -> bytes:
    """{1: token, 2: expires_in, -2: time, ?-6: uses} or {-2: time, -5: [[token, expires_in, uses], ...]}.

    Written by hand in deterministic key order (1, 2, -2, -5, -6): this is
    on every response, and the generic encoder sorts maps every time. It is
    the fast path of cbor.dumps over the same map (keys: wire.RESP_*), held
    to it by a differential test (tests/issuer/test_differential.py).
    """
    if batch:
        n = len(issued)  # at most MAX_BATCH, so a one- or two-byte array head
        items = bytearray(bytes((0x80 | n,)) if n < 24 else bytes((0x98, n)))
        for it in issued:
            items += b"\x83" + cbor.bstr_head(len(it.token)) + it.token + _u(it.expires_in) + _u(it.uses)
        return b"\xa2\x21" + _u(now) + b"\x24" + bytes(items)
    it = issued[0]
    head = b"\xa4\x01" if it.uses != 1 else b"\xa3\x01"
    out = head + cbor.bstr_head(len(it.token)) + it.token + b"\x02" + _u(it.expires_in) + b"\x21" + _u(now)
    if it.uses != 1:
        out += b"\x25" + _u(it.uses)
    return out


def token_response_json(issued: list[Issued], now: int, batch: bool) -> bytes:
    if batch:
        doc: dict = {"tokens": [{"access_token": b64u(it.token), "expires_in": it.expires_in, "uses": it.uses}
                                for it in issued], "time": now}
    else:
        it = issued[0]
        doc = {"access_token": b64u(it.token), "expires_in": it.expires_in, "uses": it.uses, "time": now}
    return json.dumps(doc, separators=(",", ":")).encode()


def error_cbor(refusal: Refusal, now: int) -> bytes:
    m: dict[int, Any] = {ERR_ERROR: refusal.ace_error, ERR_DESCRIPTION: refusal.message,
                         RESP_TIME: now, ERR_CODE: refusal.code}
    if refusal.retry_after is not None:
        m[ERR_RETRY_AFTER] = refusal.retry_after
    return cbor.dumps(m)


def error_json(refusal: Refusal, now: int) -> bytes:
    doc: dict[str, Any] = {"error": ACE_NAMES[refusal.ace_error], "error_description": refusal.message,
                           "code": refusal.code, "time": now}
    if refusal.retry_after is not None:
        doc["retry_after"] = refusal.retry_after
    return json.dumps(doc, separators=(",", ":")).encode()


class Response(NamedTuple):
    """A decoded /token response (client side)."""

    time: int
    tokens: list            # [(token bytes, expires_in, uses)]
    code: str | None = None
    message: str | None = None
    ace_error: int | None = None
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


def parse_response(body: bytes, content_type: str = CBOR_TYPES[0]) -> Response:
    """Decode a /token response in either format (for clients, tests and the bench)."""
    if content_type.startswith(JSON_TYPE):
        doc = json.loads(body)
        if "code" in doc:
            return Response(doc["time"], [], doc["code"], doc["error_description"],
                            next(k for k, v in ACE_NAMES.items() if v == doc["error"]), doc.get("retry_after"))
        if "tokens" in doc:
            return Response(doc["time"], [(unb64u(t["access_token"]), t["expires_in"], t["uses"]) for t in doc["tokens"]])
        return Response(doc["time"], [(unb64u(doc["access_token"]), doc["expires_in"], doc["uses"])])
    m = cbor.loads(body, max_string=4096, max_items=MAX_BATCH)
    if ERR_CODE in m:
        return Response(m[RESP_TIME], [], m[ERR_CODE], m[ERR_DESCRIPTION], m[ERR_ERROR], m.get(ERR_RETRY_AFTER))
    if RESP_TOKENS in m:
        return Response(m[RESP_TIME], [tuple(t) for t in m[RESP_TOKENS]])
    return Response(m[RESP_TIME], [(m[RESP_ACCESS_TOKEN], m[RESP_EXPIRES_IN], m.get(RESP_USES, 1))])


def method_names(mask: int) -> list[str]:
    """The REST method names of a permission bitmask (for policy matching)."""
    return [name for name, bit in REST_METHODS.items() if mask & bit]
