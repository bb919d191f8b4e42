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
PopFailed = _kind("pop_failed", "A proof-of-possession token came without a valid proof for this request, "
                                "or to a hop that cannot read its key.")


# Keys: what reading trusted keys (key files, the issuer's GET /keys document) can
# fail with. Not token verdicts, so not in wire.ERROR_CODES: a verifier that meets
# one keeps the keys it had, and tokens are then judged with those.


class InvalidKey(CrumbError, ValueError):
    """A key file or key set document that is not a usable Ed25519 key (set): unreadable, not JSON,
    nested or sized past its bounds, of the wrong shape, or inconsistent (a kid that is not its key's)."""

    code = "invalid_key"


class KeysUnavailable(CrumbError):
    """The issuer's GET /keys could not be had: unreachable, timing out, or not answering 200."""

    code = "keys_unavailable"


# A service's own failure while checking a request (a bug, or an application callable
# that raised): the request is refused, never served unverified. The issuer's refusal
# of the same name (wire.REFUSALS) means the same.
InternalError = _kind("internal_error", "Checking the request failed unexpectedly; it is refused (a bug).")

# Not a verdict on a token either: the request or statement came without one. The HTTP
# middleware answers it 401; inside PostgreSQL it is crumb.token not set.
MissingToken = _kind("missing_token", "No token was presented.")

#: The one table of codes: every CrumbError's code, one class each. The token verdicts
#: come first, in wire.ERROR_CODES order (PROTOCOL.md §8); then the services' own codes.
BY_CODE: dict[str, type[CrumbError]] = {
    cls.code: cls
    for cls in (
        Malformed, UnsupportedVersion, UnknownKey, BadSignature, Expired, NotYetValid,
        ScopeDenied, CaveatFailed, UnknownCaveat, Replayed, ChainIncomplete, ChainInvalid,
        Revoked, TooLarge, StoreUnavailable, PopFailed,
        InvalidKey, KeysUnavailable, InternalError, MissingToken,
    )
}
