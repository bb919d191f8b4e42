"""Scope: AIF (RFC 9237) ``[[resource, permission], ...]``.

A permission is one operation (text), several (array of text), or a REST
method bitmask (uint, GET=1 POST=2 PUT=4 DELETE=8 FETCH=16 PATCH=32
iPATCH=64). A resource ending in ``*`` is a prefix pattern; ``*`` may appear
nowhere else.

In a token the AIF array travels CBOR-encoded inside a byte string: the IANA
CWT claims registry types claim 9 (scope) as a text or byte string (RFC 9200
§5.10), and portable ACE implementations read AIF from a byte string.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import cbor
from .errors import Malformed
from .wire import MAX_ITEMS, MAX_STRING, REST_METHODS

Permission = str | list | int
ALL_METHODS = sum(REST_METHODS.values())  # every known method bit


def _too_long(text: str) -> bool:
    # UTF-8 is at most 4 bytes a character: short text needs no encoding to measure.
    return len(text) > MAX_STRING // 4 and len(text.encode()) > MAX_STRING


def check_resource(resource: object, *, pattern: bool = True) -> str:
    if type(resource) is not str or not resource or _too_long(resource):
        raise Malformed("a resource is non-empty text of at most 255 bytes")
    star = resource.find("*")
    if star != -1 and (not pattern or star != len(resource) - 1):
        raise Malformed(f"resource {resource!r}: '*' is allowed only as the last character of a pattern")
    return resource


def check_operation(op: object) -> str:
    if type(op) is not str or not op or _too_long(op):
        raise Malformed("an operation is non-empty text of at most 255 bytes")
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
