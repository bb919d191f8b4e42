"""Verification for HTTP services: ASGI and WSGI middleware, request rules, hops.

    from crumb.services.middleware import CrumbMiddleware, Route, Routes
    app = CrumbMiddleware(app, verifier, Routes(Route("/sensors/{id}", operation="read")))

docs/services.md walks through every piece.
"""

from ..grant import Grant
from .asgi import CrumbMiddleware
from .forward import Forward, attest_and_forward, attest_and_forward_async
from .guard import Guard, MissingToken, bearer_token
from .problems import MISSING_TOKEN, problem, status_for
from .rules import PUBLIC, RequestInfo, Route, Routes, path_as_resource
from .wsgi import ENVIRON_KEY, CrumbWSGIMiddleware

__all__ = [
    "ENVIRON_KEY",
    "MISSING_TOKEN",
    "PUBLIC",
    "CrumbMiddleware",
    "CrumbWSGIMiddleware",
    "Forward",
    "Grant",
    "Guard",
    "MissingToken",
    "RequestInfo",
    "Route",
    "Routes",
    "attest_and_forward",
    "attest_and_forward_async",
    "bearer_token",
    "path_as_resource",
    "problem",
    "status_for",
]
