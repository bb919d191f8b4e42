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

from ...errors import CrumbError, PopFailed, TooLarge
from ...keys import SigningKey
from ...verify import Verifier
from ...wire import POP_HEADER
from ..servicelog import ServiceLog
from .guard import MAX_POP_BODY, Facts, Guard, pop_request
from .problems import problem
from .recording import record_accepted, record_refused
from .rules import RequestInfo, Rule

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("crumb.http")
_POP_HEADER = POP_HEADER.encode()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise PopFailed("the client went away before its body could be proved")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_POP_BODY:
            raise TooLarge(f"a request with a proof of possession has a body of at most {MAX_POP_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then whatever the client sends next."""
    sent = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


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

    ``service_log``: a ServiceLog (servicelog.py) that records every decision
    on a protected request. An accepted request reaches the app only once its
    record is committed; if it cannot be, the request is refused with
    store_unavailable (503), so nothing is accepted without its record.
    """

    def __init__(self, app: ASGIApp, verifier: Verifier, rule: Rule | None = None, *,
                 facts: Facts | None = None, node_key: SigningKey | None = None,
                 offload: bool | None = None, realm: str = "crumb",
                 service_log: ServiceLog | None = None) -> None:
        self.app = app
        self.service_log = service_log
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
        target: tuple[str, str] | None = None
        proofs = [v.decode("latin-1") for k, v in raw if k == _POP_HEADER]
        try:
            target = guard.target(info)  # cheap: public routes never wait for a thread
            pop = None
            if target is not None and proofs and kind == "http":
                # The proof covers the body's hash: read it (bounded) and hand the app the same bytes.
                body = await _read_body(receive)
                receive = _replay(body, receive)
                pop = pop_request(info, proofs, body)
            if target is None:
                grant = None
            elif self.offload:
                grant = await to_thread.run_sync(guard.grant, info, target, auth, pop)
            else:
                grant = guard.grant(info, target, auth, pop)
        except CrumbError as e:
            log.info("rejected %s %s: %s: %s", method, info.path, e.code, e.message)
            if self.service_log is not None:
                # Appended in a worker thread: each append waits for its fsync.
                await to_thread.run_sync(record_refused, self.service_log, e, target, auth)
            await self._refuse(kind, send, e)
            return
        if grant is not None and self.service_log is not None:
            try:
                await to_thread.run_sync(record_accepted, self.service_log, grant)
            except CrumbError as e:  # store_unavailable: no record, no request (the use stays spent)
                log.error("refused %s %s: the service log cannot be written: %s", method, info.path, e.message)
                await self._refuse(kind, send, e)
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

    async def _refuse(self, kind: str, send: Send, e: CrumbError) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": e.code})
        else:
            await send_problem(send, e.code, e.message, self.realm)
