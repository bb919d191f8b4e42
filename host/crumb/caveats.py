"""Caveats: a small typed predicate language over the request context.

A caveat is ``[predicate, field, value]``. ``field`` is an integer naming a
built-in context field or text naming an application fact the verifier
supplies. Evaluation is one pass, each predicate O(len(value)) with value
lengths bounded by the parser; every caveat must hold. A missing field or a
type mismatch makes the caveat false (fail closed); an unknown predicate or
field is ``unknown_caveat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import CaveatFailed, Malformed, UnknownCaveat
from .wire import (
    FIELD_AUDIENCE,
    FIELD_HOP,
    FIELD_OPERATION,
    FIELD_RESOURCE,
    FIELD_SUBJECT,
    FIELD_TIME,
    MAX_CAVEATS,
    MAX_ITEMS,
    MAX_STRING,
    PRED_EQ,
    PRED_GE,
    PRED_GT,
    PRED_IN,
    PRED_LE,
    PRED_LT,
    PRED_NE,
    PRED_PREFIX,
)

PREDICATES = {
    "eq": PRED_EQ, "ne": PRED_NE, "in": PRED_IN, "prefix": PRED_PREFIX,
    "lt": PRED_LT, "le": PRED_LE, "gt": PRED_GT, "ge": PRED_GE,
}
FIELDS = {
    "resource": FIELD_RESOURCE, "operation": FIELD_OPERATION, "time": FIELD_TIME,
    "hop": FIELD_HOP, "audience": FIELD_AUDIENCE, "subject": FIELD_SUBJECT,
}
PREDICATE_NAMES = {v: k for k, v in PREDICATES.items()}
FIELD_NAMES = {v: k for k, v in FIELDS.items()}

_SCALAR = (int, str, bytes)


def make(predicate: str, field: str, value: Any) -> list:
    """A caveat, from names: ``crumb.caveat("lt", "time", 1800000000)``.

    Args:
        predicate: one of ``eq ne in prefix lt le gt ge`` (PREDICATES).
        field: a context field (``resource operation time hop audience
            subject``, FIELDS), or any other name: an application fact the
            verifier must be given in ``facts``.
        value: what the field is compared with (a list for ``in``).

    Returns:
        The caveat as it travels in a token, ``[predicate, field, value]``.

    Raises:
        ValueError: an unknown predicate.
        CrumbError: ``malformed`` for a value of the wrong type.
    """
    if predicate not in PREDICATES:
        raise ValueError(f"unknown predicate {predicate!r} (known: {', '.join(PREDICATES)})")
    code = FIELDS.get(field, field)
    caveat = [PREDICATES[predicate], code, list(value) if isinstance(value, tuple) else value]
    check(caveat)
    return caveat


def check(caveat: object) -> None:
    """Validate one decoded caveat's shape; unknown predicate/field → UnknownCaveat."""
    if not isinstance(caveat, list) or len(caveat) != 3:
        raise Malformed("a caveat is [predicate, field, value]")
    pred, field, value = caveat
    if not isinstance(pred, int) or isinstance(pred, bool):
        raise Malformed("a caveat predicate is an integer")
    if pred not in PREDICATE_NAMES:
        raise UnknownCaveat(f"predicate {pred} is not understood")
    if isinstance(field, int) and not isinstance(field, bool):
        if field not in FIELD_NAMES:
            raise UnknownCaveat(f"context field {field} is not understood")
    elif isinstance(field, str):
        if not field or len(field.encode()) > MAX_STRING or field in FIELDS:
            raise Malformed(f"fact name {field!r} is empty, too long or reserved")
    else:
        raise Malformed("a caveat field is an integer (built-in) or text (fact)")
    if pred == PRED_IN:
        if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
            raise Malformed("'in' takes a non-empty array")
        if not all(isinstance(v, _SCALAR) and not isinstance(v, bool) for v in value):
            raise Malformed("'in' takes an array of integers or strings")
    elif pred == PRED_PREFIX:
        if not isinstance(value, (str, bytes)):
            raise Malformed("'prefix' takes text or bytes")
    elif pred in (PRED_EQ, PRED_NE):
        if not isinstance(value, _SCALAR) or isinstance(value, bool):
            raise Malformed("'eq'/'ne' take an integer, text or bytes")
    elif not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"'{PREDICATE_NAMES[pred]}' takes an integer")


def check_list(value: object) -> list:
    if not isinstance(value, list) or len(value) > MAX_CAVEATS:
        raise Malformed(f"caveats are an array of at most {MAX_CAVEATS}")
    for caveat in value:
        check(caveat)
    return value


class Context:
    """What caveats are evaluated against: the request and the verifier's facts."""

    __slots__ = ("facts", "values")

    def __init__(self, *, resource: str, operation: str, time: int, hop: str | None,
                 audience: str | None, subject: str | None, facts: Mapping[str, Any] | None) -> None:
        self.values = {
            FIELD_RESOURCE: resource, FIELD_OPERATION: operation, FIELD_TIME: time,
            FIELD_HOP: hop, FIELD_AUDIENCE: audience, FIELD_SUBJECT: subject,
        }
        self.facts = facts or {}

    def get(self, field: int | str) -> Any:
        if isinstance(field, str):
            return self.facts.get(field)
        return self.values[field]


def holds(caveat: list, ctx: Context) -> bool:
    pred, field, want = caveat
    have = ctx.get(field)
    if have is None or isinstance(have, bool):
        return False
    if pred == PRED_EQ:
        return type(have) is type(want) and have == want
    if pred == PRED_NE:
        return type(have) is type(want) and have != want
    if pred == PRED_IN:
        return any(type(have) is type(w) and have == w for w in want)
    if pred == PRED_PREFIX:
        return type(have) is type(want) and have.startswith(want)
    if not isinstance(have, int):
        return False
    if pred == PRED_LT:
        return have < want
    if pred == PRED_LE:
        return have <= want
    if pred == PRED_GT:
        return have > want
    return have >= want  # PRED_GE; check() admitted nothing else


def evaluate(caveats: list, ctx: Context) -> None:
    for caveat in caveats:
        if not holds(caveat, ctx):
            raise CaveatFailed(f"caveat failed: {describe(caveat)}")


def describe(caveat: list) -> str:
    pred, field, value = caveat
    name = FIELD_NAMES.get(field, field) if isinstance(field, int) else f"fact {field!r}"
    return f"{name} {PREDICATE_NAMES.get(pred, pred)} {value!r}"
