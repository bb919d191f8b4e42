"""Line numbers for TOML values.

tomllib reports line numbers for syntax errors only; a policy that parses
but says something wrong ("ttl = -5") must still be explained by line. This
scanner walks the text once, tracking the current table header, and records
where each table and each key starts. Paths are the tuples the validator
uses: ``("groups", "sensors", "allow", 0, "ttl")``, with the index of an
array-of-tables entry counted from its ``[[...]]`` headers.

It only locates; tomllib has already accepted the text. Anything it cannot
place (a key inside an inline table, say) falls back to the nearest
enclosing table or key that it could.
"""

from __future__ import annotations

import re

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _strip_comment(line: str) -> str:
    # A '#' inside a string is not a comment; strings on key/header lines are short.
    quote = None
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1  # skip the escaped character
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
        i += 1
    return line


def _keys(text: str) -> list[str] | None:
    """Split a dotted key ('a."b.c".d') into its parts; None if it is not one."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return None
        if text[i] in "\"'":
            q = text[i]
            end = text.find(q, i + 1)
            if end < 0:
                return None
            parts.append(text[i + 1:end])
            i = end + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i < n:
            if text[i] != ".":
                return None
            i += 1
    return parts or None


class Locator:
    """Maps value paths to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple, int] = {}
        table: tuple = ()
        counts: dict[tuple, int] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = _strip_comment(raw).strip()
            if not line:
                continue
            if line.startswith("[["):
                keys = _keys(line[2:line.rfind("]]")]) if "]]" in line else None
                if keys is not None:
                    base = self._resolve(tuple(keys[:-1])) + (keys[-1],)
                    index = counts.get(base, 0)
                    counts[base] = index + 1
                    table = base + (index,)
                    self._mark(table, number)
                continue
            if line.startswith("["):
                keys = _keys(line[1:line.rfind("]")]) if "]" in line else None
                if keys is not None:
                    table = self._resolve(tuple(keys[:-1])) + (keys[-1],)
                    self._mark(table, number)
                continue
            eq = line.find("=")
            if eq > 0:
                keys = _keys(line[:eq])
                if keys is not None:
                    path = table
                    for k in keys:
                        path = path + (k,)
                        self.lines.setdefault(path, number)

    def _mark(self, table: tuple, number: int) -> None:
        # [a.b.c] also defines a and a.b (implicitly): they start here unless seen before.
        for end in range(1, len(table) + 1):
            self.lines.setdefault(table[:end], number)

    def _resolve(self, keys: tuple) -> tuple:
        # In [[a.b]] followed by [a.b.c], "a.b" means the latest entry of the array.
        path: tuple = ()
        for k in keys:
            path = path + (k,)
            latest = max((p[-1] for p in self.lines if len(p) == len(path) + 1 and p[:-1] == path
                          and isinstance(p[-1], int)), default=None)
            if latest is not None:
                path = path + (latest,)
        return path

    def line_of(self, path: tuple) -> int | None:
        """The line of ``path`` or, failing that, of its nearest located ancestor."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def dotted(path: tuple) -> str:
    """("groups", "s", "allow", 0, "ttl") -> 'groups.s.allow[0].ttl'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE.fullmatch(part) else f'"{part}"'
            out += f".{name}" if out else name
    return out
