"""The issuer's refusals: stable code -> HTTP status and ACE error.

The codes shared with token verification (DESIGN.md §3) keep their meaning;
the issuer adds only what a token cannot say about a *request*:
``bad_mac``, ``stale_time``, ``unknown_device``, ``rate_limited``. Every
refusal carries one of these codes, a human message, and the issuer's time.
"""

from __future__ import annotations

# ACE error codes (RFC 9200 §8.4, CBOR values of the OAuth "error" parameter).
ACE_INVALID_REQUEST = 1
ACE_INVALID_CLIENT = 2
ACE_INVALID_GRANT = 3
ACE_UNAUTHORIZED_CLIENT = 4
ACE_INVALID_SCOPE = 6

ACE_NAMES = {
    ACE_INVALID_REQUEST: "invalid_request",
    ACE_INVALID_CLIENT: "invalid_client",
    ACE_INVALID_GRANT: "invalid_grant",
    ACE_UNAUTHORIZED_CLIENT: "unauthorized_client",
    ACE_INVALID_SCOPE: "invalid_scope",
}

# code: (HTTP status, ACE error, what it means)
CODES: dict[str, tuple[int, int, str]] = {
    "malformed": (400, ACE_INVALID_REQUEST, "the request is not a well-formed token request"),
    "unsupported_media_type": (415, ACE_INVALID_REQUEST,
                               "Content-Type is not application/ace+cbor or application/json"),
    "too_large": (413, ACE_INVALID_REQUEST, "the body, or the batch, exceeds a limit"),
    "bad_mac": (401, ACE_INVALID_CLIENT, "the request MAC does not verify for this client_id"),
    "stale_time": (401, ACE_INVALID_CLIENT,
                   "the device time is too far from the issuer's; resync from the response time and retry"),
    "replayed": (401, ACE_INVALID_CLIENT, "this device nonce was already used"),
    "unknown_device": (401, ACE_INVALID_CLIENT, "the device is not enrolled"),
    "revoked": (403, ACE_UNAUTHORIZED_CLIENT, "the device is revoked"),
    "scope_denied": (403, ACE_INVALID_SCOPE, "the policy does not allow this scope for this device"),
    "rate_limited": (429, ACE_INVALID_REQUEST, "the device asked for tokens faster than its rate"),
    "store_unavailable": (503, ACE_INVALID_REQUEST,
                          "a backing store (Redis, audit log) cannot answer; nothing was issued"),
    "internal_error": (500, ACE_INVALID_REQUEST, "a bug in the issuer; nothing was issued (please report)"),
}

ISSUER_ONLY_CODES = ("unsupported_media_type", "bad_mac", "stale_time", "unknown_device", "rate_limited",
                     "internal_error")


class Refusal(Exception):
    """A token request is refused. Raised anywhere in the pipeline; becomes an error response."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None,
                 status: int | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown issuer error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        # A batch over its limit is too_large but not a 413 (the body was fine).
        self.status = status if status is not None else CODES[code][0]

    @property
    def ace_error(self) -> int:
        return CODES[self.code][1]

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
