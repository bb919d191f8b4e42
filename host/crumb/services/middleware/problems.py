"""Rejections as HTTP: RFC 9457 problem details plus an RFC 6750 ``WWW-Authenticate`` challenge.

    HTTP/1.1 401 Unauthorized
    content-type: application/problem+json
    www-authenticate: Bearer realm="crumb", error="invalid_token", error_description="replayed: ..."

    {"type": "about:blank", "title": "Unauthorized", "status": 401,
     "code": "replayed", "detail": "all 1 use(s) of this token are spent at hop 'gateway'"}

``code`` is the stable machine code (PROTOCOL.md §8, plus ``missing_token``
here); ``detail`` is for people. 401: the token is missing or not valid;
403: a valid token that does not cover this request (scope, caveats, chain
position); 503: the replay store cannot answer, so nothing can be accepted.
"""

from __future__ import annotations

import json

from ...errors import MissingToken

MISSING_TOKEN = MissingToken.code

FORBIDDEN = frozenset({"scope_denied", "caveat_failed", "chain_incomplete", "chain_invalid"})
UNAVAILABLE = frozenset({"store_unavailable"})

TITLES = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable", 502: "Bad Gateway",
          500: "Internal Server Error"}

PROBLEM_TYPE = "application/problem+json"


def status_for(code: str) -> int:
    """HTTP status for a code; any code not listed (a future one) is a 401: fail closed."""
    if code in FORBIDDEN:
        return 403
    if code in UNAVAILABLE:
        return 503
    return 401


def _quoted(text: str, limit: int = 200) -> str:
    # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
    clean = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return clean[:limit]


def challenge(code: str, message: str, realm: str) -> str | None:
    """The ``WWW-Authenticate`` value, or None where no challenge applies (503)."""
    status = status_for(code)
    if status == 503:
        return None
    if code == MISSING_TOKEN:
        return f'Bearer realm="{_quoted(realm)}"'  # RFC 6750 §3.1: no error code without a token
    error = "insufficient_scope" if status == 403 else "invalid_token"
    return (f'Bearer realm="{_quoted(realm)}", error="{error}", '
            f'error_description="{_quoted(code + ": " + message)}"')


def problem(code: str, message: str, *, realm: str = "crumb",
            status: int | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of the problem response for a rejection."""
    status = status or status_for(code)
    body = json.dumps({"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
                       "code": code, "detail": message}).encode()
    headers = [("content-type", PROBLEM_TYPE), ("content-length", str(len(body))),
               ("cache-control", "no-store")]
    www = challenge(code, message, realm) if status in (401, 403) else None
    if www is not None:
        headers.append(("www-authenticate", www))
    if status == 503:
        headers.append(("retry-after", "1"))
    return status, headers, body
