"""ASGI details a real HTTP client cannot reach: WebSocket handshakes, lifespan, shared state, offloading."""

from __future__ import annotations

import anyio
import pytest

from crumb import Verifier, mint, to_text
from crumb.replay import MemoryReplayStore
from crumb.services.keyfetch import FetchedKeys
from crumb.services.middleware import CrumbMiddleware, Route, Routes
from crumb.services.replay_redis import RedisReplayStore

RULE = Routes(Route("/ws/{sensor}", resource="/sensors/{sensor}", operation="subscribe"),
              Route("/healthz", public=True))


def run(app, scope):
    sent, seen = [], []

    async def inner(scope, receive, send):
        seen.append(scope)
        await send({"type": "websocket.accept"} if scope["type"] == "websocket" else {"type": "ok"})

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    async def main():
        await app.__class__(inner, app.guard.verifier, app.guard.rule)(scope, receive, send)

    anyio.run(main)
    return sent, seen


def ws_scope(token: bytes | None, path="/ws/temp01", state=None) -> dict:
    headers = [(b"host", b"x")]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + to_text(token).encode()))
    scope = {"type": "websocket", "path": path, "headers": headers, "query_string": b""}
    if state is not None:
        scope["state"] = state
    return scope


@pytest.fixture
def app(issuer):
    return CrumbMiddleware(lambda *a: None, Verifier([issuer.public], replay=MemoryReplayStore(fence=False)), RULE)


def test_websocket_handshake_is_verified(app, issuer):
    sent, seen = run(app, ws_scope(mint(issuer, scope=[("/sensors/temp01", "subscribe")])))
    assert sent == [{"type": "websocket.accept"}] and seen[0]["crumb"].operation == "subscribe"
    for token, code in ((None, "missing_token"), (mint(issuer, scope=[("/sensors/temp02", "subscribe")]),
                                                  "scope_denied")):
        sent, seen = run(app, ws_scope(token))
        assert seen == [] and sent == [{"type": "websocket.close", "code": 1008, "reason": code}]


def test_lifespan_passes_through(app):
    sent, seen = run(app, {"type": "lifespan"})
    assert seen and sent == [{"type": "ok"}]


def test_a_shared_state_dict_never_carries_a_grant_to_another_request(app, issuer):
    shared = {"db": "conn"}
    _, seen = run(app, ws_scope(mint(issuer, scope=[("/sensors/temp01", "subscribe")]), state=shared))
    assert seen[0]["state"]["crumb"] is seen[0]["crumb"] and seen[0]["state"]["db"] == "conn"
    assert shared == {"db": "conn"}
    # A public request handed a state dict that (somehow) holds a grant does not see it.
    _, seen = run(app, ws_scope(None, path="/healthz", state={"db": "conn", "crumb": "stale"}))
    assert seen[0]["state"] == {"db": "conn"} and "crumb" not in seen[0]


def test_verification_is_offloaded_only_when_it_may_block(issuer, redis_server):
    def mw(**kw):
        return CrumbMiddleware(lambda *a: None, Verifier([issuer.public], **kw), RULE)

    assert mw().offload is False
    assert mw(replay=RedisReplayStore(redis_server.url)).offload is True
    assert mw(resolver=FetchedKeys("http://127.0.0.1:9/keys")).offload is True
    assert CrumbMiddleware(lambda *a: None, Verifier([issuer.public]), RULE, offload=True).offload is True


class Unknown:
    leeway = 5

    def consume(self, *a):
        return True


def test_a_store_that_does_not_say_is_assumed_to_block(issuer):
    assert CrumbMiddleware(lambda *a: None, Verifier([issuer.public], replay=Unknown()), RULE).offload is True
