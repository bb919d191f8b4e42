"""WSGI middleware (Flask, Django, any WSGI app): verify before the app runs.

    app.wsgi_app = CrumbWSGIMiddleware(app.wsgi_app, verifier, Routes(...))   # Flask

    @app.post("/sensors/<sensor>/readings")
    def reading(sensor):
        grant = request.environ["crumb.verified"]

A rejected request never reaches the app: the middleware answers with a
problem response (problems.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ...errors import CrumbError, TooLarge
from ...keys import SigningKey
from ...verify import Verifier
from ..servicelog import ServiceLog
from .guard import MAX_POP_BODY, Facts, Guard, pop_request
from .problems import TITLES, problem
from .recording import record_accepted, record_refused
from .rules import RequestInfo, Rule

ENVIRON_KEY = "crumb.verified"

log = logging.getLogger("crumb.http")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


def _http_headers(environ: dict) -> dict[str, str]:
    out = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value
    if "CONTENT_TYPE" in environ:
        out["content-type"] = environ["CONTENT_TYPE"]
    if "CONTENT_LENGTH" in environ:
        out["content-length"] = environ["CONTENT_LENGTH"]
    return out


def _path(environ: dict) -> str:
    # PEP 3333 hands the path over as latin-1-decoded bytes; the resource is UTF-8 text.
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return "\x00"  # not a canonical path: refused by the guard


def _read_body(environ: dict) -> bytes:
    """The body (at most MAX_POP_BODY bytes), put back as wsgi.input for the app."""
    import io
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_POP_BODY:
        raise TooLarge(f"a request with a proof of possession has a body of at most {MAX_POP_BODY} bytes")
    body = environ["wsgi.input"].read(int(length)) if int(length) else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


class CrumbWSGIMiddleware:
    """Verify ``Authorization: Bearer`` tokens for the wrapped WSGI app.

    The verified request is ``environ["crumb.verified"]`` (a Grant).
    """

    def __init__(self, app: WSGIApp, verifier: Verifier, rule: Rule | None = None, *,
                 facts: Facts | None = None, node_key: SigningKey | None = None,
                 realm: str = "crumb", service_log: ServiceLog | None = None) -> None:
        self.app = app
        # As for the ASGI middleware: every decision recorded, nothing accepted without its record.
        self.service_log = service_log
        self.guard = Guard(verifier, rule, facts=facts, node_key=node_key)
        self.realm = realm

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        # WSGI servers fold repeated headers into one value; a comma inside a
        # bearer token is not base64url, so two tokens still fail as malformed.
        auth = environ.get("HTTP_AUTHORIZATION")
        method = environ.get("REQUEST_METHOD", "GET")
        info = RequestInfo(method, _path(environ), environ.get("QUERY_STRING", ""), _http_headers(environ))
        environ.pop(ENVIRON_KEY, None)
        authorization = [auth] if auth is not None else []
        target: tuple[str, str] | None = None
        proof = environ.get("HTTP_CRUMB_POP")
        try:
            target = self.guard.target(info)
            pop = None
            if target is not None and proof is not None:
                # The proof covers the body's hash: read it (bounded) and hand the app the same bytes.
                body = _read_body(environ)
                pop = pop_request(info, [proof], body)
            grant = None if target is None else self.guard.grant(info, target, authorization, pop)
        except CrumbError as e:
            log.info("rejected %s %s: %s: %s", method, info.path, e.code, e.message)
            if self.service_log is not None:
                record_refused(self.service_log, e, target, authorization)
            return self._refuse(e, start_response)
        if grant is not None:
            if self.service_log is not None:
                try:
                    record_accepted(self.service_log, grant)
                except CrumbError as e:  # store_unavailable: no record, no request (the use stays spent)
                    log.error("refused %s %s: the service log cannot be written: %s", method, info.path, e.message)
                    return self._refuse(e, start_response)
            environ[ENVIRON_KEY] = grant
        return self.app(environ, start_response)

    def _refuse(self, e: CrumbError, start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = problem(e.code, e.message, realm=self.realm)
        start_response(f"{status} {TITLES.get(status, 'Error')}", headers)
        return [body]
