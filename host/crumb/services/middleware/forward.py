"""Hops: attest the verified token with this service's node key and call the next hop with it.

In a handler (the token comes from the middleware's Grant)::

    resp = await attest_and_forward_async(request.state.crumb, "http://ingest/readings",
                                          client=client, node_key=node_key, json=reading)

Or as a whole service: a gateway that only checks and passes requests on is
``CrumbMiddleware(Forward("http://ingest:8002"), verifier, rule, node_key=key)``.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from ...keys import SigningKey
from ..grant import Grant
from .asgi import Receive, Scope, Send, send_problem

log = logging.getLogger("crumb.http")

UPSTREAM_UNAVAILABLE = "upstream_unavailable"

# RFC 9110 §7.6.1 hop-by-hop fields, plus what the forwarder sets itself.
_NOT_FORWARDED = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length", b"authorization",
})


def _headers(grant: Grant, node_key: SigningKey | None, headers: Any) -> dict:
    out = dict(headers or {})
    out["authorization"] = grant.authorization(node_key)
    return out


def attest_and_forward(grant: Grant, url: str, *, client: httpx.Client, node_key: SigningKey | None = None,
                       method: str = "POST", headers: Any = None, **request: Any) -> httpx.Response:
    """Send a request to the next hop carrying this hop's attested token (sync, httpx.Client)."""
    return client.request(method, url, headers=_headers(grant, node_key, headers), **request)


async def attest_and_forward_async(grant: Grant, url: str, *, client: httpx.AsyncClient,
                                   node_key: SigningKey | None = None, method: str = "POST",
                                   headers: Any = None, **request: Any) -> httpx.Response:
    """Send a request to the next hop carrying this hop's attested token (httpx.AsyncClient)."""
    return await client.request(method, url, headers=_headers(grant, node_key, headers), **request)


class Forward:
    """ASGI app that passes each verified request on to ``upstream`` (same method, path, body).

    Must sit behind CrumbMiddleware (it reads the Grant); without one it
    refuses rather than forward an unverified request. The upstream's response
    (status, headers, body, including its problem responses) is passed back as is.
    """

    def __init__(self, upstream: str, *, node_key: SigningKey | None = None,
                 client: httpx.AsyncClient | None = None, timeout: float = 10.0,
                 max_body: int = 1 << 20) -> None:
        self.upstream = upstream.rstrip("/")
        self.node_key = node_key
        self.timeout = timeout
        self.max_body = max_body
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use, inside the server's event loop, and kept for keep-alive.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        grant = scope.get("crumb")
        if not isinstance(grant, Grant):
            log.error("Forward received a request no CrumbMiddleware verified; refusing it")
            await send_problem(send, "internal_error", "this hop forwards only verified requests", status=500)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await send({"type": "http.response.start", "status": 413, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in _NOT_FORWARDED]
        headers.append((b"authorization", grant.authorization(self.node_key).encode()))
        target = self.upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            req = self.client.build_request(scope["method"], target, headers=headers, content=bytes(body))
            resp = await self.client.send(req, stream=True)
            try:
                raw = b"".join([chunk async for chunk in resp.aiter_raw()])
            finally:
                await resp.aclose()
        except httpx.HTTPError as e:
            log.warning("next hop %s unreachable: %s", self.upstream, e)
            await send_problem(send, UPSTREAM_UNAVAILABLE, f"the next hop cannot be reached ({type(e).__name__})",
                               status=502)
            return
        out = [(k.lower(), v) for k, v in resp.headers.raw if k.lower() not in _NOT_FORWARDED]
        out.append((b"content-length", str(len(raw)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": raw})
