"""ASGI middleware (Starlette, FastAPI, any ASGI app): verify before the app runs.

    app = CrumbMiddleware(app, verifier, Routes(...))
    # or, with Starlette/FastAPI:  app.add_middleware(CrumbMiddleware, verifier=verifier, rule=Routes(...))

    async def handler(request):
        grant = request.state.crumb          # also request.scope["crumb"]
        grant.sub, grant.claims, grant.attested

A rejected request never reaches the app: the middleware answers with a
problem response (problems.py). WebSocket handshakes are checked the same
way and refused with close code 1008 (policy violation). Lifespan and other
scope types pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import to_thread

from ...errors import CrumbError
from ...keys import SigningKey
from ...verify import Verifier
from .guard import Facts, Guard
from .problems import problem
from .rules import RequestInfo, Rule

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("crumb.http")


async def send_problem(send: Send, code: str, message: str, realm: str = "crumb",
                       status: int | None = None) -> None:
    status, headers, body = problem(code, message, realm=realm, status=status)
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


class CrumbMiddleware:
    """Verify ``Authorization: Bearer`` tokens for the wrapped ASGI app.

    ``offload``: run verification in a worker thread. Default: only when it
    may block (a Redis replay store, fetched keys), so in-memory verification
    costs no thread hop while network I/O never stalls the event loop.
    """

    def __init__(self, app: ASGIApp, verifier: Verifier, rule: Rule | None = None, *,
                 facts: Facts | None = None, node_key: SigningKey | None = None,
                 offload: bool | None = None, realm: str = "crumb") -> None:
        self.app = app
        self.guard = Guard(verifier, rule, facts=facts, node_key=node_key)
        self.offload = self.guard.blocking if offload is None else offload
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        raw = scope["headers"]
        auth = [v.decode("latin-1") for k, v in raw if k == b"authorization"]
        method = scope.get("method", "GET")  # a WebSocket handshake is a GET
        info = RequestInfo(method, scope["path"], scope.get("query_string", b"").decode("latin-1"), raw)
        guard = self.guard
        try:
            target = guard.target(info)  # cheap: public routes never wait for a thread
            if target is None:
                grant = None
            elif self.offload:
                grant = await to_thread.run_sync(guard.grant, info, target, auth)
            else:
                grant = guard.grant(info, target, auth)
        except CrumbError as e:
            log.info("rejected %s %s: %s: %s", method, info.path, e.code, e.message)
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": e.code})
            else:
                await send_problem(send, e.code, e.message, self.realm)
            return
        # A new state dict per request: the server's may be shared (lifespan
        # state), and one request's grant must never be seen by another.
        state = scope.get("state")
        if grant is not None:
            scope["crumb"] = grant
            scope["state"] = {**state, "crumb": grant} if state else {"crumb": grant}
        else:
            scope.pop("crumb", None)
            if state and "crumb" in state:
                scope["state"] = {k: v for k, v in state.items() if k != "crumb"}
        await self.app(scope, receive, send)
