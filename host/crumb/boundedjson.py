"""JSON with bounds: size and nesting depth are checked before the parser runs.

The standard parser recurses once per level of nesting and raises
RecursionError (not ValueError) on a document like ``[[[[...]]]]``; what it
is handed here is counted first, so every failure is a ValueError.
"""

from __future__ import annotations

import json
import re

MAX_JSON_DEPTH = 16  # a key set is 3 levels deep ({"keys": [{...}]}); a JWK member may add one or two

# Escape pairs, quotes and brackets: one linear pass (a pattern matching whole strings
# would rescan to the end from every quote of an unterminated one: quadratic).
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)
_BACKSLASH, _QUOTE = 0x5C, 0x22
_OPEN = frozenset(b"[{")


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (0 for a scalar)."""
    level = deepest = 0
    in_string = False
    for m in _TOKENS.finditer(data):
        c = m.group()[0]
        if c == _BACKSLASH:  # an escape pair: an escaped quote does not end a string
            continue
        if c == _QUOTE:
            in_string = not in_string
        elif in_string:
            continue
        elif c in _OPEN:
            level += 1
            deepest = max(deepest, level)
        else:
            # Never below 0: a stray closer cannot buy room for deeper nesting later.
            level = max(0, level - 1)
    return deepest


def loads(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Parse UTF-8 JSON of at most ``max_bytes`` bytes and ``max_depth`` levels.

    Raises:
        ValueError: too large, too deeply nested, not UTF-8, or not JSON; nothing else.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    if depth(raw) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:  # unreachable under max_depth; kept so the contract holds whatever the limit
        raise ValueError("nested too deeply") from None
