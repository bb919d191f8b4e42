"""The issuer's refusals: stable code -> HTTP status and ACE error.

The table itself (codes, HTTP statuses, ACE error numbers and names) is
crumb.wire's REFUSALS and ACE_*: this module adds the exception that
carries a refusal through the pipeline. The codes shared with token
verification (PROTOCOL.md §8) keep their meaning; the issuer adds only what a
token cannot say about a *request*: ``bad_mac``, ``stale_time``,
``unknown_device``, ``rate_limited``. Every refusal carries one of these
codes, a human message, and the issuer's time.
"""

from __future__ import annotations

from ..wire import ERROR_CODES, REFUSALS, RefusalCode

# code -> RefusalCode(HTTP status, ACE error, meaning): wire.REFUSALS, under the issuer's name.
CODES: dict[str, RefusalCode] = REFUSALS

# The codes a token verifier never raises.
ISSUER_ONLY_CODES = tuple(code for code in REFUSALS if code not in ERROR_CODES)


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
        self.status = status if status is not None else CODES[code].status

    @property
    def ace_error(self) -> int:
        return CODES[self.code].ace_error

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
