"""Sets of trusted keys: the issuer's ``GET /keys`` document, and pinned key files.

The document (JSON)::

    {"keys":  [{"kty": "OKP", "crv": "Ed25519", "x": ..., "kid": "<hex>", "status": "current"}, ...],
     "nodes": [{"name": "gateway", "kty": "OKP", "crv": "Ed25519", "x": ..., "kid": "<hex>"}, ...]}

``keys`` are issuer keys (trusted to sign authority blocks) with status
``current`` or ``previous``; entries with another status (``retired``, or
one this code does not know) are not trusted. ``nodes`` are the keys of hops
and attenuators, used only to resolve the 4-byte kids a token may carry:
never trusted as issuer keys. Parsing is strict: a key whose ``kid`` does not
match its ``x``, or any malformed entry, rejects the whole document rather
than trusting part of it. Parsing is total: any document gives a KeySet or a
KeySetError (code ``invalid_key``), never another exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .. import boundedjson
from ..errors import InvalidKey
from ..keys import KeyFileError, PublicKey, load_public_key, read_json, unb64u

TRUSTED_STATUS = frozenset({"current", "previous"})
MAX_KEYS = 64  # a key set is a handful of keys; more is a broken or hostile document
MAX_DOCUMENT_BYTES = 64 * 1024


class KeySetError(InvalidKey):
    """A key set document that cannot be trusted as a whole (code ``invalid_key``; a ValueError too)."""


class KeySet:
    """Issuer keys and node keys, each by kid."""

    __slots__ = ("issuer", "nodes")

    def __init__(self, issuer: Iterable[PublicKey] = (), nodes: Iterable[PublicKey] = ()) -> None:
        self.issuer = {k.kid: k for k in issuer}
        self.nodes = {k.kid: k for k in nodes}

    def __repr__(self) -> str:
        return (f"KeySet(issuer=[{', '.join(k.hex() for k in self.issuer)}], "
                f"nodes=[{', '.join(k.hex() for k in self.nodes)}])")

    def issuer_key(self, kid: bytes) -> PublicKey | None:
        return self.issuer.get(kid)

    def node_key(self, kid: bytes) -> PublicKey | None:
        return self.nodes.get(kid)


def _jwk_key(entry: object, where: str) -> PublicKey:
    if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
        raise KeySetError(f"{where}: not an Ed25519 JWK (kty OKP, crv Ed25519)")
    try:
        raw = unb64u(entry["x"])
    except (KeyError, TypeError, ValueError):
        raise KeySetError(f"{where}: missing or invalid 'x'") from None
    if len(raw) != 32:
        raise KeySetError(f"{where}: 'x' must be 32 bytes")
    key = PublicKey(raw)
    kid = entry.get("kid")
    if kid is not None and kid != key.kid.hex():
        raise KeySetError(f"{where}: kid {kid!r} is not the kid of its key ({key.kid.hex()})")
    return key


def parse_document(doc: object) -> KeySet:
    """Validate a parsed ``GET /keys`` document.

    Args:
        doc: the document, as JSON parsing gives it (any value).

    Returns:
        KeySet: the trusted issuer keys and the node keys.

    Raises:
        KeySetError: ``invalid_key``, on anything off-contract (and nothing else, whatever ``doc`` is).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeySetError('a key set is a JSON object with a "keys" array')
    nodes = doc.get("nodes", [])
    if not isinstance(nodes, list):
        raise KeySetError('"nodes" is an array of JWKs')
    if len(doc["keys"]) + len(nodes) > MAX_KEYS:
        raise KeySetError(f"more than {MAX_KEYS} keys in one key set")
    issuer = []
    for i, entry in enumerate(doc["keys"]):
        key = _jwk_key(entry, f"keys[{i}]")
        status = entry.get("status", "current")  # a plain JWK set (RFC 7517) has no status
        if not isinstance(status, str):
            raise KeySetError(f"keys[{i}]: status is text")
        if status in TRUSTED_STATUS:
            issuer.append(key)
    node_keys = [_jwk_key(entry, f"nodes[{i}]") for i, entry in enumerate(nodes)]
    overlap = {k.kid for k in issuer} & {k.kid for k in node_keys}
    if overlap:
        # One key in both roles would let a hop sign authority blocks: refuse the set.
        raise KeySetError(f"key(s) {', '.join(sorted(k.hex() for k in overlap))} listed as issuer and node keys")
    return KeySet(issuer, node_keys)


def parse_json(body: bytes | str) -> KeySet:
    """A ``GET /keys`` body: UTF-8 JSON of at most MAX_DOCUMENT_BYTES, nested at most boundedjson.MAX_JSON_DEPTH.

    Raises:
        KeySetError: ``invalid_key``: too large, too deep, not JSON, or off-contract.
    """
    try:
        doc = boundedjson.loads(body, max_bytes=MAX_DOCUMENT_BYTES)
    except ValueError as e:
        raise KeySetError(f"the key set is not usable JSON ({e})") from None
    return parse_document(doc)


def load_file(path: str | os.PathLike) -> KeySet:
    """A pinned key file: a saved ``GET /keys`` document, or one JWK (an issuer key).

    Raises:
        KeyFileError: ``invalid_key``: unreadable, not JSON, or not a key (set).
    """
    doc = read_json(path)
    if isinstance(doc, dict) and "keys" in doc:
        try:
            return parse_document(doc)
        except KeySetError as e:
            raise KeyFileError(f"{path}: {e}") from None
    return KeySet([load_public_key(path)])


def pinned(issuer_files: Iterable[str | os.PathLike] = (),
           node_files: Iterable[str | os.PathLike] = ()) -> KeySet:
    """Keys from files: issuer key files (or key set documents) and node public key files.

    Raises:
        KeyFileError: ``invalid_key``, naming the file.
    """
    out = KeySet()
    for path in issuer_files:
        ks = load_file(path)
        out.issuer.update(ks.issuer)
        out.nodes.update(ks.nodes)
    for path in node_files:
        key = load_public_key(path)
        out.nodes[key.kid] = key
    return out
