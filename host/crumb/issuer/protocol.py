"""The /token wire format: requests, responses, the device MAC and key derivation.

PROTOCOL.md §11 is the prose for this module. In short, a device request is
one deterministic CBOR map (RFC 8949 §4.2.1) of ACE parameters (RFC 9200
§5.8.1) and one crumb block under a private-use key:

    {      5: audience (tstr, optional)        ACE "audience"
           9: scope (tstr or bstr)             ACE "scope": "resource|op" entries
                                               separated by spaces, or AIF in a bstr
          24: client_id (tstr)                 ACE "client_id": the device id
          33: 2 (optional)                     ACE "grant_type": client_credentials
          38: null (optional)                  ACE "ace_profile"
      -65537: block (bstr) }                   crumb: time (4 bytes) || count (1)
                                               || nonce (6..16) || MAC (16)

The block's key sorts after every registered key, so it ends the request,
and the MAC ends the block: MAC = HMAC-SHA256(device key, every byte of the
request before it)[:16]. A device can MAC as it writes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from typing import Any, NamedTuple

from .. import cbor
from ..errors import CrumbError, Malformed
from ..keys import b64u, unb64u
from ..scope import check_canonical, check_permission
from ..wire import (  # the request's keys and sizes are re-exported here: protocol.REQ_SCOPE etc.
    ACE_NAMES,
    BLOCK_COUNT_BYTES,
    BLOCK_TIME_BYTES,
    CBOR_TYPES,
    CNF_COSE_KEY,
    COSE_KEY_K,
    DEVICE_KEY_LABEL,
    ERR_CODE,
    ERR_DESCRIPTION,
    ERR_ERROR,
    ERR_RETRY_AFTER,
    GRANT_CLIENT_CREDENTIALS,
    JSON_TYPE,
    MAC_BYTES,
    MAX_BATCH,
    MAX_CLIENT_ID,
    MAX_COUNT,
    MAX_KEY_GENERATION,
    MAX_PERMISSION_OPS,
    MAX_STRING,
    NONCE_MAX,
    NONCE_MIN,
    REQ_ACE_PROFILE,
    REQ_AUDIENCE,
    REQ_CLIENT_ID,
    REQ_CRUMB,
    REQ_GRANT_TYPE,
    REQ_SCOPE,
    RESP_ACCESS_TOKEN,
    RESP_CNF,
    RESP_EXPIRES_IN,
    RESP_TIME,
    RESP_TOKEN_TYPE,
    RESP_TOKENS,
    RESP_USES,
    REST_METHODS,
    SCOPE_ENTRY_SEPARATOR,
    SCOPE_OP_MARK,
    SCOPE_OP_SEPARATOR,
    TOKEN_TYPE_BEARER,
    TOKEN_TYPE_POP,
)
from .codes import Refusal

_DEVICE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:@-]{{0,{MAX_CLIENT_ID - 1}}}\Z")

Permission = str | list | int


# -- keys and MAC ---------------------------------------------------------------------


def check_device_id(device_id: object) -> str:
    """Device ids are short printable ASCII, safe in logs, file names and Redis keys."""
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise ValueError(f"a device id is 1-{MAX_CLIENT_ID} characters of A-Z a-z 0-9 . _ : @ -, "
                         "starting with a letter or digit")
    return device_id


def derive_device_key(master: bytes, device_id: str, generation: int = 0) -> bytes:
    """device key = HMAC-SHA256(master secret, "crumb device key v1" || device id (UTF-8)),
    and for key generation n >= 1 (`crumb device rekey`) the same with 0x00 || n (4 bytes,
    big-endian) appended.

    The label has a fixed length and a device id never contains 0x00, so every
    (id, generation) has its own message; generation 0 is the original
    derivation, so devices never rekeyed keep their keys. The issuer recomputes
    the key per request and stores no per-device secret.
    """
    msg = DEVICE_KEY_LABEL + device_id.encode()
    if generation:
        if not 0 < generation <= MAX_KEY_GENERATION:
            raise ValueError(f"key generation {generation} is out of range")
        msg += b"\x00" + generation.to_bytes(4, "big")
    return hmac.digest(master, msg, "sha256")


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
        # Keyed by (device id, key generation): a rekeyed device's old state is never used again.
        self._states: dict[tuple[str, int], Any] = {}

    def _state(self, device_id: str, generation: int) -> Any:
        state = self._states.get((device_id, generation))
        if state is None:
            if len(self._states) >= self.max_entries:
                self._states.clear()
            state = hmac.new(derive_device_key(self.master, device_id, generation), digestmod=hashlib.sha256)
            self._states[device_id, generation] = state
        return state

    def mac(self, device_id: str, mac_input: bytes, generation: int = 0) -> bytes:
        h = self._state(device_id, generation).copy()
        h.update(mac_input)
        return h.digest()[:MAC_BYTES]

    def verify(self, device_id: str, mac_input: bytes, mac: bytes, generation: int = 0) -> bool:
        """Whether ``mac`` is the MAC of ``mac_input`` under the device's key of that
        generation, compared in constant time."""
        return hmac.compare_digest(self.mac(device_id, mac_input, generation), mac)


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
    mac_input: bytes        # the canonical request before the MAC
    batch: bool             # answer with the batch form (RESP_TOKENS)

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
    if not 1 <= length <= limit:
        raise _malformed(f"{what} is 1 to {limit} bytes")
    end = i + length
    if end > len(data):
        raise _malformed(f"truncated {what}")
    try:
        return data[i:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise _malformed(f"{what} is not valid UTF-8") from None


# The scope (REQ_SCOPE): RFC 9200 §5.8.1 takes a text or a byte string.
# Text: entries separated by one space, each "resource|operation[,operation...]"
# (PROTOCOL.md §11.3). Bytes: the AIF array (RFC 9237), CBOR-encoded, as in
# a token's scope claim. Either way at most MAX_BATCH entries; more than one
# asks for a batch.
MAX_TEXT_SCOPE = MAX_BATCH * (MAX_STRING + 2)


def parse_text_scope(text: str) -> list:
    """[(resource, permission)] from a text scope; Refusal (malformed) otherwise."""
    entries = text.split(SCOPE_ENTRY_SEPARATOR)
    if not 1 <= len(entries) <= MAX_BATCH:
        raise _malformed(f"a scope holds 1 to {MAX_BATCH} entries")
    out = []
    for entry in entries:
        resource, mark, ops = entry.partition(SCOPE_OP_MARK)
        names = ops.split(SCOPE_OP_SEPARATOR)
        if not mark or not resource or SCOPE_OP_MARK in ops or not 1 <= len(names) <= MAX_PERMISSION_OPS:
            raise _malformed(f"a text scope entry is resource{SCOPE_OP_MARK}operation"
                             f"[{SCOPE_OP_SEPARATOR}operation...], entries separated by one space")
        out.append((resource, names[0] if len(names) == 1 else names))
    return _checked_scope(out)


def parse_aif_scope(data: bytes) -> list:
    """[(resource, permission)] from the AIF array in a byte-string scope."""
    try:
        value = cbor.loads(data, max_depth=3, max_items=MAX_BATCH)
    except Malformed as e:
        raise _malformed(f"the scope's AIF: {e.message}") from None
    if type(value) is not list or not 1 <= len(value) <= MAX_BATCH:
        raise _malformed(f"an AIF scope is an array of 1 to {MAX_BATCH} [resource, permission] entries")
    out = []
    for entry in value:
        if type(entry) is not list or len(entry) != 2:
            raise _malformed("an AIF scope entry is [resource, permission]")
        out.append((entry[0], entry[1]))
    return _checked_scope(out)


def _checked_scope(scopes: list) -> list:
    # Canonical resources only (PROTOCOL.md §4.2): "/sensors/../valves/1" is not something
    # a rule for /sensors/* may grant, whatever its prefix says.
    try:
        for resource, perm in scopes:
            check_canonical(resource)
            check_permission(perm)
            if type(perm) is list and len(perm) > MAX_PERMISSION_OPS:  # the text form's bound, in every form
                raise Malformed(f"a permission holds at most {MAX_PERMISSION_OPS} operations")
            if not _fits_a_token(resource, perm):
                raise Malformed(f"the scope entry for {resource!r} takes more than the {MAX_STRING} bytes "
                                "of a token's scope claim")
    except CrumbError as e:
        raise _malformed(e.message) from None
    return scopes


# Heads of one AIF entry at most: the scope's array and the entry's (1 byte each), the
# resource's (2), and a permission's: an array of MAX_PERMISSION_OPS operations (1 + 2 each).
_AIF_HEADS = 2 + 2 + 1 + 2 * MAX_PERMISSION_OPS


def _fits_a_token(resource: str, perm: Permission) -> bool:
    """Whether a token's scope claim, a byte string of at most MAX_STRING bytes (§4.1), holds
    the AIF of this one entry (each token the issuer mints has one). Checked here, before
    minting: a resource and an operation of up to 255 bytes each do not fit together."""
    chars = len(resource) + (len(perm) if type(perm) is str else sum(map(len, perm)) if type(perm) is list else 0)
    if 4 * chars + _AIF_HEADS <= MAX_STRING:  # UTF-8 takes at most 4 bytes a character: no encoding needed
        return True
    return len(aif_scope([(resource, perm)])) <= MAX_STRING


def text_scope(scopes: list) -> str | None:
    """The text form of [(resource, permission)], or None when it cannot carry it
    (a method bitmask, or a name with a space, '|' or ',')."""
    entries = []
    for resource, perm in scopes:
        names = [perm] if isinstance(perm, str) else perm
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        for part in (resource, *names):
            if any(c in part for c in (SCOPE_ENTRY_SEPARATOR, SCOPE_OP_MARK, SCOPE_OP_SEPARATOR)):
                return None
        entries.append(resource + SCOPE_OP_MARK + SCOPE_OP_SEPARATOR.join(names))
    return SCOPE_ENTRY_SEPARATOR.join(entries)


def aif_scope(scopes: list) -> bytes:
    """The byte-string form of [(resource, permission)]: the AIF array, CBOR-encoded."""
    return cbor.dumps([[r, list(p) if isinstance(p, tuple) else p] for r, p in scopes])


# The crumb block (REQ_CRUMB): time (4 bytes) || count (1) || nonce || MAC.
BLOCK_MIN = BLOCK_TIME_BYTES + BLOCK_COUNT_BYTES + NONCE_MIN + MAC_BYTES
BLOCK_MAX = BLOCK_TIME_BYTES + BLOCK_COUNT_BYTES + NONCE_MAX + MAC_BYTES
_BLOCK_KEY = cbor.dumps(REQ_CRUMB)   # 0x3a 0x00 0x01 0x00 0x00: sorts after every registered key


def crumb_block(time_: int, count: int, nonce: bytes, mac: bytes = bytes(MAC_BYTES)) -> bytes:
    return time_.to_bytes(BLOCK_TIME_BYTES, "big") + bytes((count,)) + nonce + mac


def _block(value: bytes) -> tuple[int, int, bytes, bytes]:
    """(time, count, nonce, mac) from the crumb block; Refusal otherwise."""
    if not BLOCK_MIN <= len(value) <= BLOCK_MAX:
        raise _malformed(f"the crumb block ({REQ_CRUMB}) is {BLOCK_MIN} to {BLOCK_MAX} bytes: "
                         f"time ({BLOCK_TIME_BYTES}), count (1), nonce ({NONCE_MIN}-{NONCE_MAX}), mac ({MAC_BYTES})")
    count = value[BLOCK_TIME_BYTES]
    if not 1 <= count <= MAX_COUNT:
        raise _malformed(f"count is 1 to {MAX_COUNT}")
    return (int.from_bytes(value[:BLOCK_TIME_BYTES], "big"), count,
            value[BLOCK_TIME_BYTES + 1:-MAC_BYTES], value[-MAC_BYTES:])


# Request keys by their encoded bytes, in deterministic order (RFC 8949 §4.2.1:
# bytewise lexicographic order of the encoded keys).
_KEYS = sorted((cbor.dumps(k), k) for k in (REQ_AUDIENCE, REQ_SCOPE, REQ_CLIENT_ID, REQ_GRANT_TYPE,
                                               REQ_ACE_PROFILE, REQ_CRUMB))
_KEY_AT = {enc: k for enc, k in _KEYS}


def parse_cbor_request(data: bytes) -> TokenRequest:
    """Decode a device request strictly (deterministic CBOR, known keys, bounded)."""
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


# The common request's tail: the block's key and head for a 6-byte nonce, then the block.
_COMMON_BLOCK = BLOCK_MIN
_COMMON_TAIL = _BLOCK_KEY + b"\x58" + bytes((_COMMON_BLOCK,))


def _parse_common(data: bytes) -> TokenRequest | None:
    """The request nearly every device sends, or None to leave it to the general parser.

    {9: "resource|operation", 24: client_id, -65537: block with a 6-byte
    nonce and a count of 1}. Whatever this returns, _parse_cbor returns too
    for the same bytes (tests/issuer/test_differential.py checks it); it only
    skips the general parser's per-field dispatch, which was the largest
    single cost of a token request after the signature.
    """
    n = len(data)
    tail = n - _COMMON_BLOCK - len(_COMMON_TAIL)
    if n < 48 or data[0] != 0xA3 or data[1] != 0x09 or data[tail:n - _COMMON_BLOCK] != _COMMON_TAIL:
        return None
    got = _short_text(data, 2, MAX_STRING)
    if got is None:
        return None
    scope, i = got
    if data[i] != 0x18 or data[i + 1] != 0x18:
        return None
    got = _short_text(data, i + 2, MAX_CLIENT_ID)
    if got is None or got[1] != tail:
        return None
    client_id = got[0]
    resource, mark, op = scope.partition(SCOPE_OP_MARK)
    b = n - _COMMON_BLOCK
    if (not mark or SCOPE_ENTRY_SEPARATOR in scope or SCOPE_OP_SEPARATOR in op or SCOPE_OP_MARK in op
            or data[b + BLOCK_TIME_BYTES] != 1 or not _DEVICE_ID.match(client_id)):
        return None
    try:
        check_canonical(resource)
        check_permission(op)
    except CrumbError:
        return None
    if 4 * len(scope) + _AIF_HEADS > MAX_STRING and not _fits_a_token(resource, op):
        return None
    return TokenRequest(client_id, [(resource, op)], data[b + BLOCK_TIME_BYTES + 1:n - MAC_BYTES],
                        int.from_bytes(data[b:b + BLOCK_TIME_BYTES], "big"), 1, None, data[n - MAC_BYTES:],
                        data[:n - MAC_BYTES], False)


def _parse_cbor(data: bytes) -> TokenRequest:
    n = len(data)
    first = data[0]
    count = first & 31
    if first >> 5 != 5 or count >= 24:
        raise _malformed("a token request is a CBOR map")
    if count > len(_KEYS):
        raise _malformed(f"a token request has at most {len(_KEYS)} parameters")
    i = 1
    last = b""
    fields: dict[int, Any] = {}
    for _ in range(count):
        start = i
        size = 1 if data[i] < 0x18 else 2 if data[i] == 0x18 else 5
        enc = data[i:i + size]
        key = _KEY_AT.get(enc)
        if key is None:
            raise _malformed(f"unknown or non-preferred request parameter at offset {start}")
        if enc <= last:
            raise _malformed(f"request parameter {key} is duplicate or out of deterministic order")
        last, i = enc, i + size
        if key == REQ_SCOPE:
            mt, length, i = _head(data, i)
            if mt not in (2, 3) or not 1 <= length <= MAX_TEXT_SCOPE or i + length > n:
                raise _malformed("scope is a text string or a byte string holding AIF")
            raw, i = data[i:i + length], i + length
            if mt == 2:
                fields[key] = parse_aif_scope(raw)
            else:
                try:
                    fields[key] = parse_text_scope(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _malformed("scope is not valid UTF-8") from None
        elif key == REQ_CLIENT_ID:
            fields[key], i = _text(data, i, "client_id", MAX_CLIENT_ID)
        elif key == REQ_AUDIENCE:
            fields[key], i = _text(data, i, "audience", MAX_STRING)
        elif key == REQ_GRANT_TYPE:
            mt, value, i = _head(data, i)
            if mt != 0 or value != GRANT_CLIENT_CREDENTIALS:
                raise Refusal("unsupported_grant_type", "grant_type is client_credentials "
                              f"({GRANT_CLIENT_CREDENTIALS}), the only grant crumb issues")
        elif key == REQ_ACE_PROFILE:
            if data[i] != 0xF6:
                raise _malformed("ace_profile in a request is null (asking which profile; crumb has one)")
            i += 1
        else:  # REQ_CRUMB, the last key there can be
            mt, length, i = _head(data, i)
            if mt != 2 or i + length != n:
                raise _malformed(f"the crumb block ({REQ_CRUMB}) is a byte string that ends the request")
            fields[key] = _block(data[i:n])
            i = n
    if i != n:
        raise _malformed(f"{n - i} trailing bytes after the request")
    return _finish(fields, data[:n - MAC_BYTES] if REQ_CRUMB in fields else b"")


def _finish(fields: dict, mac_input: bytes) -> TokenRequest:
    for key, name in ((REQ_CLIENT_ID, "client_id"), (REQ_SCOPE, "scope"), (REQ_CRUMB, f"crumb block ({REQ_CRUMB})")):
        if key not in fields:
            raise _malformed(f"the request has no {name}")
    client_id = fields[REQ_CLIENT_ID]
    if not _DEVICE_ID.match(client_id):
        raise _malformed(f"client_id is 1-{MAX_CLIENT_ID} characters of A-Z a-z 0-9 . _ : @ -")
    time_, count, nonce, mac = fields[REQ_CRUMB]
    scopes = fields[REQ_SCOPE]
    if count > 1 and len(scopes) > 1:
        raise _malformed("count applies to a single scope, not to several")
    return TokenRequest(client_id, scopes, nonce, time_, count, fields.get(REQ_AUDIENCE), mac, mac_input,
                        count > 1 or len(scopes) > 1)


# JSON: the same request with names instead of numbers, bytes as base64url; the
# MAC is over the canonical CBOR of the same request (build_request's bytes).
def _json_scope(value: object) -> list:
    if isinstance(value, str):
        # Checked before anything encodes it: JSON's "\ud800" is a str that UTF-8 cannot hold.
        if not _encodable(value):
            raise _malformed("scope is not valid Unicode text (a lone surrogate)")
        if len(value.encode()) > MAX_TEXT_SCOPE:
            raise _malformed("scope is too long")
        return parse_text_scope(value)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
        raise _malformed(f"scope is text or an AIF array of 1 to {MAX_BATCH} [resource, permission] entries")
    out = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _malformed("an AIF scope entry is [resource, permission]")
        perm = entry[1]
        if isinstance(perm, bool) or not isinstance(perm, (str, int, list)):
            raise _malformed("a permission is an operation, an array of operations or a method bitmask")
        out.append((entry[0], perm))
    return _checked_scope(out)


def _b64(value: object, name: str) -> bytes:
    try:
        raw = unb64u(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None:
        raise _malformed(f"{name} is base64url text without padding")
    return raw


def _json_uint(value: object, name: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _malformed(f"{name} is an integer from 0 to {limit}")
    return value


_JSON_NAMES = ("client_id", "audience", "scope", "grant_type", "ace_profile", "nonce", "time", "count", "mac")


def parse_json_request(data: bytes) -> TokenRequest:
    """A non-device client's request: ACE's JSON names, crumb's nonce, time, count and mac, the same MAC."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise _malformed("the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _malformed("a token request is a JSON object")
    unknown = sorted(set(doc) - set(_JSON_NAMES))
    if unknown:
        raise _malformed(f"unknown request parameter {unknown[0]!r}")
    for name in ("client_id", "scope", "nonce", "time", "mac"):
        if name not in doc:
            raise _malformed(f"the request has no {name}")
    client_id, audience = doc["client_id"], doc.get("audience")
    if not isinstance(client_id, str) or not _DEVICE_ID.match(client_id):
        raise _malformed(f"client_id is 1-{MAX_CLIENT_ID} characters of A-Z a-z 0-9 . _ : @ -")
    if audience is not None and (not isinstance(audience, str) or not _encodable(audience)
                                 or not 1 <= len(audience.encode()) <= MAX_STRING):
        raise _malformed(f"audience is 1 to {MAX_STRING} bytes of text")
    if "grant_type" in doc and doc["grant_type"] != "client_credentials":
        raise Refusal("unsupported_grant_type", "grant_type is client_credentials, the only grant crumb issues")
    if "ace_profile" in doc and doc["ace_profile"] is not None:
        raise _malformed("ace_profile in a request is null")
    nonce, mac = _b64(doc["nonce"], "nonce"), _b64(doc["mac"], "mac")
    time_ = _json_uint(doc["time"], "time", 2 ** (8 * BLOCK_TIME_BYTES) - 1)
    count = _json_uint(doc.get("count", 1), "count", MAX_COUNT)
    if not NONCE_MIN <= len(nonce) <= NONCE_MAX or len(mac) != MAC_BYTES or count < 1:
        raise _malformed(f"nonce is {NONCE_MIN}-{NONCE_MAX} bytes, mac {MAC_BYTES}, count 1-{MAX_COUNT}")
    scopes = _json_scope(doc["scope"])
    canonical = _request_map(client_id, doc["scope"] if isinstance(doc["scope"], str) else aif_scope(scopes),
                             audience, "grant_type" in doc, "ace_profile" in doc, crumb_block(time_, count, nonce))
    fields: dict[int, Any] = {REQ_CLIENT_ID: client_id, REQ_SCOPE: scopes, REQ_CRUMB: (time_, count, nonce, mac)}
    if audience is not None:
        fields[REQ_AUDIENCE] = audience
    return _finish(fields, canonical[:-MAC_BYTES])


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON can carry it, UTF-8 cannot
        return False
    return True


def _request_map(client_id: str, scope: str | bytes, audience: str | None, grant_type: bool, ace_profile: bool,
                 block: bytes) -> bytes:
    m: dict[int, Any] = {REQ_CLIENT_ID: client_id, REQ_SCOPE: scope, REQ_CRUMB: block}
    if audience is not None:
        m[REQ_AUDIENCE] = audience
    if grant_type:
        m[REQ_GRANT_TYPE] = GRANT_CLIENT_CREDENTIALS
    if ace_profile:
        m[REQ_ACE_PROFILE] = None
    return cbor.dumps(m)


def build_request(device_id: str, device_key: bytes, scopes: list, *, count: int = 1,
                  audience: str | None = None, nonce: bytes | None = None,
                  now: int | None = None, nonce_bytes: int = NONCE_MIN, aif: bool = False,
                  grant_type: bool = False, ace_profile: bool = False) -> bytes:
    """Build a signed CBOR request (what ucrumb does on the device).

    ``scopes`` is ``[(resource, permission)]``, in the text form unless
    ``aif`` or the text form cannot carry it (then the AIF byte string).
    ``grant_type`` and ``ace_profile`` add RFC 9200's optional parameters.
    """
    text = None if aif else text_scope(list(scopes))
    nonce = nonce if nonce is not None else os.urandom(nonce_bytes)
    block = crumb_block(int(time.time()) if now is None else now, count, nonce)
    body = _request_map(device_id, text if text is not None else aif_scope(list(scopes)), audience,
                        grant_type, ace_profile, block)
    return body[:-MAC_BYTES] + mac_of(device_key, body[:-MAC_BYTES])


def build_json_request(device_id: str, device_key: bytes, scopes: list, *, count: int = 1,
                       audience: str | None = None, nonce: bytes | None = None,
                       now: int | None = None, aif: bool = False) -> bytes:
    """The JSON form of build_request (same MAC, over the canonical CBOR)."""
    body = build_request(device_id, device_key, scopes, count=count, audience=audience, nonce=nonce, now=now, aif=aif)
    req = parse_cbor_request(body)
    doc: dict[str, Any] = {"client_id": device_id,
                           "scope": text_scope(req.scopes) if not aif and text_scope(req.scopes) is not None
                           else [[r, p] for r, p in req.scopes],
                           "nonce": b64u(req.nonce), "time": req.time, "mac": b64u(req.mac)}
    if count != 1:
        doc["count"] = count
    if audience is not None:
        doc["audience"] = audience
    return json.dumps(doc).encode()


# -- responses ------------------------------------------------------------------------


class Issued(NamedTuple):
    token: bytes
    expires_in: int
    uses: int
    cti: bytes
    scope: tuple
    pop_key: bytes | None = None   # a PoP token's key (§11.9): only ever sent encrypted


def token_response_pop(issued: list[Issued], now: int, batch: bool) -> bytes:
    """The plaintext of an encrypted token response (§11.9), by the core encoder: the response
    map of §11.6 with token_type 2 (PoP) and each PoP token's key: ``cnf`` (8) {1: COSE_Key} for
    one token, a fourth element (the key's bytes) in its batch entry."""
    from ..pop import symmetric_cose_key
    m: dict[int, Any] = {RESP_TOKEN_TYPE: TOKEN_TYPE_POP, RESP_TIME: now}
    if batch:
        m[RESP_TOKENS] = [[it.token, it.expires_in, it.uses] + ([it.pop_key] if it.pop_key is not None else [])
                          for it in issued]
    else:
        it = issued[0]
        m[RESP_ACCESS_TOKEN] = it.token
        m[RESP_EXPIRES_IN] = it.expires_in
        if it.pop_key is not None:
            m[RESP_CNF] = {CNF_COSE_KEY: symmetric_cose_key(it.pop_key)}
        if it.uses != 1:
            m[RESP_USES] = it.uses
    return cbor.dumps(m)


_u = encode_uint


def token_response_cbor(issued: list[Issued], now: int, batch: bool) -> bytes:
    """{1: token, 2: expires_in, 34: Bearer, -65537: time, ?-65539: uses}, or for a
    batch {34: Bearer, -65537: time, -65538: [[token, expires_in, uses], ...]}.

    Written by hand in deterministic key order (1, 2, 34, then crumb's
    private-use keys): this is on every response, and the generic encoder
    sorts maps every time. It is the fast path of cbor.dumps over the same map
    (keys: wire.RESP_*), held to it by a differential test
    (tests/issuer/test_differential.py).
    """
    if batch:
        n = len(issued)  # at most MAX_BATCH, so a one- or two-byte array head
        items = bytearray(bytes((0x80 | n,)) if n < 24 else bytes((0x98, n)))
        for it in issued:
            items += b"\x83" + cbor.bstr_head(len(it.token)) + it.token + _u(it.expires_in) + _u(it.uses)
        return b"\xa3" + _TYPE + _TIME + _u(now) + _TOKENS + bytes(items)
    it = issued[0]
    head = b"\xa5\x01" if it.uses != 1 else b"\xa4\x01"
    out = head + cbor.bstr_head(len(it.token)) + it.token + b"\x02" + _u(it.expires_in) + _TYPE + _TIME + _u(now)
    if it.uses != 1:
        out += _USES + _u(it.uses)
    return out


_TYPE = cbor.dumps(RESP_TOKEN_TYPE) + cbor.dumps(TOKEN_TYPE_BEARER)
_TIME, _TOKENS, _USES = (cbor.dumps(k) for k in (RESP_TIME, RESP_TOKENS, RESP_USES))


def token_response_json(issued: list[Issued], now: int, batch: bool) -> bytes:
    if batch:
        doc: dict = {"token_type": "Bearer",
                     "tokens": [{"access_token": b64u(it.token), "expires_in": it.expires_in, "uses": it.uses}
                                for it in issued], "time": now}
    else:
        it = issued[0]
        doc = {"access_token": b64u(it.token), "expires_in": it.expires_in, "token_type": "Bearer", "uses": it.uses,
               "time": now}
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
    tokens: list            # [(token bytes, expires_in, uses[, PoP key])]
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
    one = (m[RESP_ACCESS_TOKEN], m[RESP_EXPIRES_IN], m.get(RESP_USES, 1))
    if RESP_CNF in m:  # a PoP token's key (§11.9): the fourth element, as in a batch entry
        one += (m[RESP_CNF][CNF_COSE_KEY][COSE_KEY_K],)
    return Response(m[RESP_TIME], [one])


def method_names(mask: int) -> list[str]:
    """The REST method names of a permission bitmask (for policy matching)."""
    return [name for name, bit in REST_METHODS.items() if mask & bit]
