"""What a service's handler receives for a request whose token passed."""

from __future__ import annotations

from ..claims import Claims
from ..keys import SigningKey, b64u
from ..token import attest
from ..verify import Verified


class Grant:
    """A verified token and the request it was verified for.

    ``token``: the bytes as presented. ``forward_token``: the token to hand to
    the next hop (attested by this service when its chain requires it), set
    by the middleware when it was given this service's node key.
    """

    __slots__ = ("forward_token", "operation", "resource", "token", "verified")

    def __init__(self, token: bytes, verified: Verified, resource: str, operation: str,
                 forward_token: bytes | None = None) -> None:
        self.token = token
        self.verified = verified
        self.resource = resource
        self.operation = operation
        self.forward_token = forward_token

    @property
    def claims(self) -> Claims:
        return self.verified.claims

    @property
    def sub(self) -> str | None:
        return self.verified.claims.sub

    @property
    def hop(self) -> str | None:
        """This service's hop name (None at a chain's destination)."""
        return self.verified.hop

    @property
    def attested(self) -> list[str]:
        """Hops that attested before this one, in order."""
        return self.verified.attested

    def next_token(self, node_key: SigningKey | None = None) -> bytes:
        """The token for the next hop: attested with ``node_key`` if the chain requires it.

        A token without a declared chain goes on unchanged (it is valid at any
        hop, with uses counted per hop).
        """
        if self.forward_token is not None:
            return self.forward_token
        if not self.verified.claims.chain:
            return self.token
        if self.hop is None:
            raise ValueError("this service is the destination of the token's chain: there is no next hop")
        if node_key is None:
            raise ValueError(f"the token's chain requires hop {self.hop!r} to attest: pass its node key")
        self.forward_token = attest(self.token, node_key, self.hop)
        return self.forward_token

    def authorization(self, node_key: SigningKey | None = None) -> str:
        """The ``Authorization`` header value for the next hop."""
        return "Bearer " + b64u(self.next_token(node_key))

    def to_json(self) -> dict:
        out = self.verified.to_json()
        out["resource"] = self.resource
        out["operation"] = self.operation
        return out

    def __repr__(self) -> str:
        return f"Grant(sub={self.sub!r}, {self.operation} {self.resource}, hop={self.hop!r})"
