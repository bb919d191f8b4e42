"""Scope: AIF (RFC 9237) ``[[resource, permission], ...]``.

A permission is one operation (text), several (array of text), or a REST
method bitmask (uint, GET=1 POST=2 PUT=4 DELETE=8 FETCH=16 PATCH=32
iPATCH=64). A resource ending in ``*`` is a prefix pattern; ``*`` may appear
nowhere else.

The canonical form of a resource (``noncanonical``, PROTOCOL.md §4.2) is
what the issuer grants and its policy names: no '.' or '..' segment, no
empty segment, no percent-encoding, no backslash, no control character.

In a token the AIF array travels CBOR-encoded inside a byte string: the IANA
CWT claims registry types claim 9 (scope) as a text or byte string (RFC 9200
§5.10), and portable ACE implementations read AIF from a byte string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import cbor
from .errors import Malformed
from .wire import MAX_ITEMS, MAX_STRING, REST_METHODS

Permission = str | list | int
ALL_METHODS = sum(REST_METHODS.values())  # every known method bit


# A lone surrogate: a Python str can hold one (JSON's "\ud800" makes one), UTF-8 cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_text(text: str) -> bool:
    """Empty, not encodable as UTF-8, or over MAX_STRING bytes: checked before anything encodes it."""
    if not text or _SURROGATE.search(text):
        return True
    # UTF-8 is at most 4 bytes a character: short text needs no encoding to measure.
    return len(text) > MAX_STRING // 4 and len(text.encode()) > MAX_STRING


def check_resource(resource: object, *, pattern: bool = True) -> str:
    """A resource as a token may carry it: text of 1-255 bytes, '*' only at the end of a pattern."""
    if type(resource) is not str or _bad_text(resource):
        raise Malformed("a resource is non-empty text of at most 255 bytes of UTF-8")
    star = resource.find("*")
    if star != -1 and (not pattern or star != len(resource) - 1):
        raise Malformed(f"resource {resource!r}: '*' is allowed only as the last character of a pattern")
    return resource


# The canonical form of a resource (PROTOCOL.md §4.2). Services map requests to
# resources and may normalise what they are given: drop '.' and '..' segments,
# merge '//', decode '%2e' or '%2f', read a backslash as '/', strip a tab or a newline
# (WHATWG URL parsers do). A grant of "/sensors/*" would then reach
# "/sensors/../valves/1", which such a service reads as "/valves/1". Prefix
# patterns cannot reason about any of that, so the issuer grants, and its policy
# names, only resources without them. Segments are what '/' separates; a resource
# may start with '/' (a path) or not (an MQTT topic, a name), and "/" alone is one.
_NONCANONICAL = re.compile(r"[%\\\x00-\x1f\x7f]|//|(?:^|/)\.\.?(?:;[^/]*)?(?:/|\Z)|(?<=.)/\Z")
_WHY = (
    (re.compile("%"), "percent-encoding ('%'): a resource is decoded text"),
    (re.compile(r"\\"), "a backslash, which some services read as '/'"),
    (re.compile("[\x00-\x1f\x7f]"), "a control character"),
    # "..;x" too: servers that take ';' to start a segment's parameters (RFC 2396) read it as ".."
    (re.compile(r"(?:^|/)\.\.?(?:;[^/]*)?(?:/|\Z)"), "a '.' or '..' segment"),
)


def noncanonical(resource: str) -> str | None:
    """Why ``resource`` is not in canonical form, or None when it is.

    Canonical: no '.' or '..' segment (nor one with ';' parameters, "..;x"), no empty segment ('//', or a '/' at the
    end of anything but "/"), no '%', no backslash, no control character
    (U+0000-U+001F, U+007F). A pattern's '*' is an ordinary character here.
    """
    if _NONCANONICAL.search(resource) is None:
        return None
    for regex, why in _WHY:
        if regex.search(resource):
            return why
    return "an empty segment ('//', or a '/' at the end)"


def check_canonical(resource: object, *, pattern: bool = True) -> str:
    """check_resource, and the canonical form on top: what the issuer grants and its policy may name."""
    checked = check_resource(resource, pattern=pattern)
    why = noncanonical(checked)
    if why is not None:
        raise Malformed(f"resource {checked!r} is not in canonical form: it has {why}")
    return checked


def check_operation(op: object) -> str:
    if type(op) is not str or _bad_text(op):
        raise Malformed("an operation is non-empty text of at most 255 bytes of UTF-8")
    return op


def check_permission(perm: object) -> Permission:
    if type(perm) is str:
        return check_operation(perm)
    if type(perm) is int:  # bool is not int here, on purpose
        if perm <= 0 or perm & ~ALL_METHODS:
            raise Malformed(f"method bitmask {perm} is empty or has unknown bits")
        return perm
    if type(perm) is list:
        if len(perm) < 2:
            raise Malformed("a permission array holds two or more operations (one is plain text)")
        for op in perm:
            check_operation(op)
        if len(set(perm)) != len(perm):
            raise Malformed("a permission array repeats an operation")
        return perm
    raise Malformed("a permission is text, an array of text or a method bitmask")


def check_scope(value: object) -> list:
    """Validate a decoded scope claim; returns it unchanged."""
    if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
        raise Malformed("scope is a non-empty array of [resource, permission]")
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise Malformed("a scope entry is [resource, permission]")
        check_resource(entry[0])
        check_permission(entry[1])
    return value


def scope_bytes(scope: list) -> bytes:
    """The scope claim's value: the AIF array, CBOR-encoded, as a byte string's content."""
    return cbor.dumps(scope)


def scope_from_bytes(value: object) -> list:
    """The AIF array inside a scope claim's byte string, decoded strictly and validated.

    Depth 3 at most (array of entries, an entry, a permission array)."""
    if type(value) is not bytes:
        raise Malformed("the scope claim is a byte string holding AIF (format version 2)")
    return check_scope(cbor.loads(value, max_depth=3))


def encode_scope(entries: Iterable[tuple[str, object]]) -> list:
    """Build a scope claim from ``(resource, operations)`` pairs.

    ``operations`` is one operation name, a list of names, or an int bitmask.
    """
    out = []
    for resource, ops in entries:
        if isinstance(ops, (list, tuple)):
            ops = list(dict.fromkeys(ops))
            perm: Permission = ops[0] if len(ops) == 1 else ops
        else:
            perm = ops  # type: ignore[assignment]
        out.append([check_resource(resource), check_permission(perm)])
    return check_scope(out)


def resource_matches(pattern: str, resource: str) -> bool:
    if pattern[-1] == "*":
        return resource.startswith(pattern[:-1])
    return pattern == resource


def permits(perm: Permission, operation: str) -> bool:
    if isinstance(perm, str):
        return perm == operation
    if isinstance(perm, int):
        bit = REST_METHODS.get(operation.upper())
        return bit is not None and bool(perm & bit)
    return operation in perm


def allows(scope: list, resource: str, operation: str) -> bool:
    for pattern, perm in scope:
        if resource_matches(pattern, resource) and permits(perm, operation):
            return True
    return False
