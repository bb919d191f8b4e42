"""The decision both middlewares make: request → (resource, operation) → Grant, or a CrumbError."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import Malformed, MissingToken, PopFailed, ScopeDenied, TooLarge
from ...keys import SigningKey
from ...token import to_bytes
from ...verify import Verifier
from ...wire import MAX_TOKEN_BYTES, POP_HEADER
from ..grant import Grant
from .rules import PUBLIC, RequestInfo, Rule, canonical_path, path_as_resource

Facts = Callable[[RequestInfo], Mapping[str, Any] | None]


def bearer_token(values: Sequence[str], max_bytes: int = MAX_TOKEN_BYTES) -> bytes:
    """The token of ``Authorization: Bearer <base64url>`` (RFC 6750 §2.1), as bytes."""
    if not values:
        raise MissingToken("send the token as 'Authorization: Bearer <token>'")
    if len(values) > 1:
        raise Malformed("more than one Authorization header")
    scheme, _, rest = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken(f"the Authorization scheme is {scheme[:20]!r}, not Bearer")
    text = rest.strip()
    if not text:
        raise Malformed("the bearer token is empty")
    if len(text) > (max_bytes * 4 + 2) // 3:  # base64url length of max_bytes: refuse before decoding
        raise TooLarge(f"the token is larger than {max_bytes} bytes")
    return to_bytes(text)


#: The largest body a request with a proof of possession may have: the proof covers the body's
#: hash, so the middleware reads the body before the app does (and hands the app the same bytes).
MAX_POP_BODY = 1024 * 1024


def pop_request(info: RequestInfo, values: Sequence[str], body: bytes) -> Any:
    """The request's proof of possession (``Crumb-PoP`` header, PROTOCOL.md §12.1), or None without one."""
    if not values:
        return None
    if len(values) > 1:
        raise PopFailed(f"more than one {POP_HEADER} header")
    from ...pop import PopRequest, parse_proof_text
    target = info.path + ("?" + info.query if info.query else "")
    return PopRequest(parse_proof_text(values[0]), info.method.upper(), target, body)


class Guard:
    """Configuration shared by the ASGI and WSGI middlewares.

    ``rule``: maps a request to (resource, operation) (default: path and method).
    ``facts``: application facts for caveats, from the request.
    ``node_key``: this service's key; when set, tokens whose chain requires this
    hop to attest are attested here and the result is ``grant.forward_token``.
    """

    __slots__ = ("facts", "node_key", "rule", "verifier")

    def __init__(self, verifier: Verifier, rule: Rule | None = None, *, facts: Facts | None = None,
                 node_key: SigningKey | None = None) -> None:
        self.verifier = verifier
        self.rule = rule or path_as_resource
        self.facts = facts
        self.node_key = node_key

    def target(self, info: RequestInfo) -> tuple[str, str] | None:
        """What the request needs: (resource, operation), None if public; or raise ScopeDenied."""
        if not canonical_path(info.path):
            raise ScopeDenied("the path is not in canonical form (empty, '.' or '..' segments, '%', a backslash "
                              "or a control character); send the canonical path")
        decision = self.rule(info)
        if decision is PUBLIC:
            return None
        if decision is None:
            raise ScopeDenied(f"no authorization rule covers {info.method} {info.path}")
        return decision  # type: ignore[return-value]

    def grant(self, info: RequestInfo, target: tuple[str, str], authorization: Sequence[str],
              pop: Any = None) -> Grant:
        """Verify the request's bearer token for ``target``; the Grant, or raise the CrumbError.

        ``pop``: the request's proof (``pop_request``), which a PoP token's first hop checks.
        """
        resource, operation = target
        token = bearer_token(authorization, self.verifier.max_token_bytes)
        facts = self.facts(info) if self.facts is not None else None
        verified = self.verifier.verify(token, resource, operation, facts=facts, pop=pop)
        grant = Grant(token, verified, resource, operation)
        if self.node_key is not None and verified.hop is not None and verified.claims.chain:
            grant.next_token(self.node_key)
        return grant

    def authorize(self, info: RequestInfo, authorization: Sequence[str], pop: Any = None) -> Grant | None:
        """A Grant, None for a public request, or raise the CrumbError to answer with."""
        target = self.target(info)
        return None if target is None else self.grant(info, target, authorization, pop)

    @property
    def blocking(self) -> bool:
        """Whether verification may wait on I/O (a network replay store or key fetches)."""
        v = self.verifier
        return bool(getattr(v.replay, "blocking", True)
                    or (v.resolver is not None and getattr(v.resolver, "blocking", True)))
