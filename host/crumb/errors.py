"""Typed errors. Every rejection is a CrumbError with a stable ``code``."""

from __future__ import annotations


class CrumbError(Exception):
    """A token was rejected (or could not be built).

    Attributes:
        code: the stable machine code (PROTOCOL.md §8), the same in the CLI,
            HTTP problem responses, logs and test vectors; each code has its
            subclass below (``Expired.code == "expired"``).
        message: the human message; ``str(e)`` is ``"code: message"``.
    """

    code = "malformed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _kind(code: str, doc: str) -> type[CrumbError]:
    name = "".join(part.capitalize() for part in code.split("_"))
    return type(name, (CrumbError,), {"code": code, "__doc__": doc})


Malformed = _kind("malformed", "The bytes are not a well-formed crumb token.")
UnsupportedVersion = _kind("unsupported_version", "A token format version this code does not speak.")
UnknownKey = _kind("unknown_key", "The signing key id is not trusted here.")
BadSignature = _kind("bad_signature", "A signature (or proof) does not verify.")
Expired = _kind("expired", "The token's expiry has passed.")
NotYetValid = _kind("not_yet_valid", "The token is not valid yet (nbf or iat in the future).")
ScopeDenied = _kind("scope_denied", "The token does not grant this resource and operation.")
CaveatFailed = _kind("caveat_failed", "A caveat is false for this request.")
UnknownCaveat = _kind("unknown_caveat", "A caveat or critical field this verifier does not understand.")
Replayed = _kind("replayed", "The token's uses at this hop are spent.")
ChainIncomplete = _kind("chain_incomplete", "A block the authority requires is missing.")
ChainInvalid = _kind("chain_invalid", "The appended blocks are not the chain the authority declared.")
Revoked = _kind("revoked", "The token or its key was revoked.")
TooLarge = _kind("too_large", "The token exceeds a size limit.")
StoreUnavailable = _kind("store_unavailable", "The replay store cannot answer; failing closed.")

BY_CODE: dict[str, type[CrumbError]] = {
    cls.code: cls
    for cls in (
        Malformed, UnsupportedVersion, UnknownKey, BadSignature, Expired, NotYetValid,
        ScopeDenied, CaveatFailed, UnknownCaveat, Replayed, ChainIncomplete, ChainInvalid,
        Revoked, TooLarge, StoreUnavailable,
    )
}

# Not a verdict on a token, so not in BY_CODE (the token checks, in wire.py's
# order): the request or statement came without one. The HTTP middleware
# answers it 401; inside PostgreSQL it is crumb.token not set.
MissingToken = _kind("missing_token", "No token was presented.")
