"""Hops over real HTTP: verify, attest with the node key, forward (Forward app and the helpers)."""

from __future__ import annotations

import httpx
import pytest
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from crumb import SigningKey, Verifier, attest, mint, to_text
from crumb.replay import MemoryReplayStore
from crumb.services.grant import Grant
from crumb.services.middleware import (
    ENVIRON_KEY,
    CrumbMiddleware,
    CrumbWSGIMiddleware,
    Forward,
    Route,
    Routes,
    attest_and_forward,
    attest_and_forward_async,
)
from crumb.token import split
from crumb.tooling.localservices import AppServer, RefusingPort, WSGIAppServer

RULE = Routes(Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"))
RES, OP, PATH = "/sensors/temp01", "publish", "/sensors/temp01/readings"


def make_verifier(issuer, hop):
    return Verifier([issuer.public], replay=MemoryReplayStore(fence=False), hop=hop)


async def echo(request: Request):
    g = request.state.crumb
    return JSONResponse({"attested": g.attested, "hop": g.hop, "method": request.method,
                         "path": request.url.path, "query": request.url.query,
                         "body": (await request.body()).decode(), "x-test": request.headers.get("x-test"),
                         "token": to_text(g.token)}, status_code=202, headers={"x-upstream": "yes"})


@pytest.fixture(scope="module")
def chain(issuer, nodes):
    """ingest (echo) and four kinds of gateway in front of it."""
    gw = nodes["gateway"]
    ingest = AppServer(CrumbMiddleware(Starlette(routes=[StarletteRoute(PATH, echo, methods=["POST", "PUT"])]),
                                       make_verifier(issuer, "ingest"), RULE)).start()
    client = httpx.AsyncClient(timeout=5)

    async def handler(request: Request):
        resp = await attest_and_forward_async(request.state.crumb, ingest.url + request.url.path, client=client,
                                              node_key=gw, content=await request.body(),
                                              headers={"x-test": "async"})
        return Response(resp.content, resp.status_code, media_type="application/json")

    flask = Flask("gw")
    sync_client = httpx.Client(timeout=5)

    @flask.post(PATH)
    def sync_handler():
        resp = attest_and_forward(flask_request.environ[ENVIRON_KEY], ingest.url + PATH, client=sync_client,
                                  node_key=gw, content=flask_request.data, headers={"x-test": "sync"})
        return resp.content, resp.status_code, {"content-type": "application/json"}

    down = RefusingPort()  # a next hop that refuses connections
    servers = {
        "forward": AppServer(CrumbMiddleware(Forward(ingest.url), make_verifier(issuer, "gateway"), RULE,
                                             node_key=gw)),
        "async": AppServer(CrumbMiddleware(Starlette(routes=[StarletteRoute(PATH, handler, methods=["POST"])]),
                                           make_verifier(issuer, "gateway"), RULE)),
        "sync": WSGIAppServer(CrumbWSGIMiddleware(flask.wsgi_app, make_verifier(issuer, "gateway"), RULE)),
        "wrong_key": AppServer(CrumbMiddleware(Forward(ingest.url), make_verifier(issuer, "gateway"), RULE,
                                               node_key=SigningKey.generate())),
        "upstream_down": AppServer(CrumbMiddleware(Forward(down.url),
                                                   make_verifier(issuer, "gateway"), RULE, node_key=gw)),
        "unguarded": AppServer(Forward(ingest.url)),
    }
    for s in servers.values():
        s.start()
    yield ingest, servers
    for s in servers.values():
        s.stop()
    ingest.stop()
    down.close()
    sync_client.close()


def chained(issuer, nodes) -> bytes:
    return mint(issuer, sub="dev-0001", scope=[(RES, OP)],
                chain=[("gateway", nodes["gateway"].public), ("ingest", nodes["ingest"].public)])


def post(url: str, token: bytes, **kw) -> httpx.Response:
    return httpx.post(url, headers={"authorization": "Bearer " + to_text(token), **kw.pop("headers", {})},
                      timeout=5, **kw)


@pytest.mark.parametrize("kind", ["forward", "async", "sync"])
def test_gateway_attests_and_the_next_hop_sees_it(chain, issuer, nodes, kind):
    _ingest, servers = chain
    t = chained(issuer, nodes)
    r = post(servers[kind].url + PATH + "?at=now", t, content=b'{"value": 1}', headers={"x-test": "client"})
    assert r.status_code == 202, r.text
    seen = r.json()
    assert seen["attested"] == ["gateway"] and seen["hop"] == "ingest"
    assert seen["body"] == '{"value": 1}'
    # Ed25519 is deterministic: the forwarded token is exactly the gateway's attestation.
    assert seen["token"] == to_text(attest(t, nodes["gateway"], "gateway"))
    if kind == "forward":  # a pure proxy passes method, path, query, headers and answer through
        assert seen["query"] == "at=now" and seen["x-test"] == "client"
        assert r.headers["x-upstream"] == "yes"
        assert post(servers[kind].url + PATH, chained(issuer, nodes), content=b"x").status_code == 202
    else:
        assert seen["x-test"] == kind


def test_next_hop_rejections_come_back_through_the_gateway(chain, issuer, nodes):
    ingest, servers = chain
    t = chained(issuer, nodes)
    # Someone already used the gateway's attestation at ingest.
    assert post(ingest.url + PATH, attest(t, nodes["gateway"], "gateway")).status_code == 202
    r = post(servers["forward"].url + PATH, t)
    assert r.status_code == 401 and r.json()["code"] == "replayed"
    assert r.headers["content-type"] == "application/problem+json"


def test_a_token_without_a_chain_is_forwarded_unchanged(chain, issuer):
    _, servers = chain
    t = mint(issuer, sub="dev-0001", scope=[(RES, OP)])
    r = post(servers["forward"].url + PATH, t)
    assert r.status_code == 202 and r.json()["token"] == to_text(t) and r.json()["attested"] == []


def test_a_gateway_with_the_wrong_node_key_refuses(chain, issuer, nodes):
    _, servers = chain
    r = post(servers["wrong_key"].url + PATH, chained(issuer, nodes))
    assert r.status_code == 403 and r.json()["code"] == "chain_invalid"


def test_an_unreachable_next_hop_is_502(chain, issuer, nodes):
    _, servers = chain
    r = post(servers["upstream_down"].url + PATH, chained(issuer, nodes))
    assert r.status_code == 502 and r.json()["code"] == "upstream_unavailable"


def test_forward_without_middleware_forwards_nothing(chain, issuer, nodes):
    _, servers = chain
    r = post(servers["unguarded"].url + PATH, chained(issuer, nodes))
    assert r.status_code == 500 and r.json()["code"] == "internal_error"


def test_grant_next_token_needs_a_next_hop_and_a_key(issuer, nodes):
    t = chained(issuer, nodes)
    at_gateway = make_verifier(issuer, "gateway").verify(t, RES, OP)
    with pytest.raises(ValueError, match="pass its node key"):
        Grant(t, at_gateway, RES, OP).next_token()
    full = attest(attest(t, nodes["gateway"], "gateway"), nodes["ingest"], "ingest")
    at_destination = make_verifier(issuer, None).verify(full, RES, OP)
    with pytest.raises(ValueError, match="destination"):
        Grant(full, at_destination, RES, OP).next_token(nodes["ingest"])
    g = Grant(t, at_gateway, RES, OP)
    assert len(split(g.next_token(nodes["gateway"])).blocks) == 1
    assert g.authorization().startswith("Bearer ")
