"""Which (resource, operation) a request needs: path templates, methods, or a callback.

A rule is any callable ``rule(request: RequestInfo)`` returning

- ``(resource, operation)``: the request needs a token granting that;
- ``PUBLIC``: the request needs no token (must be said explicitly);
- ``None``: no rule covers the request, which is refused (deny by default).

``Routes`` is the built-in rule::

    Routes(
        Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"),
        Route("/sensors/{sensor}", methods={"GET": "read", "DELETE": "delete"}),
        Route("/healthz", public=True),
    )

``{name}`` matches one path segment, ``{name:path}`` the rest of the path.
The resource template uses the same names (default: the request path
itself). The operation is fixed (``operation=``), chosen by method
(``methods=``), or by default the method name itself (``GET``, ``POST``...),
which is also what REST method-bitmask scopes grant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from ...scope import noncanonical


class _Public:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PUBLIC"


PUBLIC = _Public()

Target = tuple[str, str]
Decision = Target | _Public | None


class RequestInfo:
    """The parts of a request a rule may look at (same for ASGI and WSGI)."""

    __slots__ = ("_headers", "_raw_headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str = "",
                 raw_headers: Iterable[tuple[bytes, bytes]] | Mapping[str, str] = ()) -> None:
        self.method = method
        self.path = path
        self.query = query
        self._raw_headers = raw_headers
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case header names; decoded only when a rule asks for them."""
        if self._headers is None:
            raw = self._raw_headers
            if isinstance(raw, Mapping):
                self._headers = {k.lower(): v for k, v in raw.items()}
            else:
                out: dict[str, str] = {}
                for k, v in raw:
                    name = k.decode("latin-1").lower()
                    value = v.decode("latin-1")
                    out[name] = f"{out[name]}, {value}" if name in out else value
                self._headers = out
        return self._headers

    def __repr__(self) -> str:
        return f"RequestInfo({self.method} {self.path})"


Rule = Callable[[RequestInfo], Decision]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")


def canonical_path(path: str) -> bool:
    """True for an absolute path in the canonical form of a resource (crumb.scope.noncanonical):
    no empty, '.' or '..' segment, no '%', backslash or control character.

    Such a path can name what an application (or a proxy in front of it) treats
    as another resource; it is refused, never normalised. The issuer grants
    only canonical resources and verifiers refuse the rest, so all three agree.
    """
    return path.startswith("/") and noncanonical(path) is None


def _compile(template: str) -> tuple[re.Pattern, list[str]]:
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with '/'")
    out, names, pos = [], [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        if name in names:
            raise ValueError(f"path template {template!r} repeats {{{name}}}")
        names.append(name)
        out.append(f"(?P<{name}>.+)" if m.group(2) else f"(?P<{name}>[^/]+)")
        pos = m.end()
    rest = template[pos:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"path template {template!r}: braces are only for {{name}} or {{name:path}}")
    out.append(re.escape(rest))
    return re.compile("".join(out)), names


class Route:
    """One path template and what it requires."""

    __slots__ = ("_names", "_regex", "methods", "operation", "path", "public", "resource")

    def __init__(self, path: str, resource: str | None = None, *, operation: str | None = None,
                 methods: Mapping[str, str] | None = None, public: bool = False) -> None:
        if operation is not None and methods is not None:
            raise ValueError("give a fixed operation or a method map, not both")
        if public and (resource is not None or operation is not None or methods is not None):
            raise ValueError("a public route requires nothing: no resource or operation")
        self._regex, self._names = _compile(path)
        if resource is not None:
            unknown = {p.group(1) for p in _PARAM.finditer(resource)} - set(self._names)
            if unknown:
                raise ValueError(f"resource {resource!r} uses {sorted(unknown)} not captured by {path!r}")
        self.path = path
        self.resource = resource
        self.operation = operation
        self.methods = {k.upper(): v for k, v in methods.items()} if methods is not None else None
        self.public = public

    def match(self, info: RequestInfo) -> Decision | bool:
        """The decision, or False when the path does not match this route."""
        m = self._regex.fullmatch(info.path)
        if m is None:
            return False
        if self.public:
            return PUBLIC
        if self.operation is not None:
            op = self.operation
        elif self.methods is not None:
            op = self.methods.get(info.method)
            if op is None:
                return None  # path known, method not allowed: refuse, do not fall through
        else:
            op = info.method
        if self.resource is None:
            return info.path, op
        values = m.groupdict()
        return _PARAM.sub(lambda p: values[p.group(1)], self.resource), op

    def __repr__(self) -> str:
        return f"Route({self.path!r})"


class Routes:
    """The first route whose template matches decides; no match is a refusal."""

    __slots__ = ("routes",)

    def __init__(self, *routes: Route) -> None:
        self.routes = routes

    def __call__(self, info: RequestInfo) -> Decision:
        for route in self.routes:
            decision = route.match(info)
            if decision is not False:
                return decision  # type: ignore[return-value]
        return None


def path_as_resource(info: RequestInfo) -> Decision:
    """The default rule: the resource is the request path, the operation its method."""
    return info.path, info.method
