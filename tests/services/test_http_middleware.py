"""ASGI (Starlette under uvicorn) and WSGI (Flask under werkzeug) middleware over real HTTP.

Every rejection: its status, its stable code in an RFC 9457 body, the
WWW-Authenticate challenge, and the app never ran.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from crumb import SigningKey, Verifier, attest, caveat, mint, to_text
from crumb.replay import MemoryReplayStore
from crumb.services.replay_redis import RedisReplayStore
from crumb.tooling.localservices import AppServer, WSGIAppServer

from . import apps

RES, OP = "/sensors/temp01", "publish"
URL = "/sensors/temp01/readings"


@pytest.fixture(scope="module")
def servers(issuer):
    """Both servers, started once; each test gets fresh tokens and a zeroed call count."""
    verifier = Verifier([issuer.public], replay=MemoryReplayStore(fence=False))
    calls = apps.Calls()
    with AppServer(apps.asgi_app(verifier, calls)) as asgi, WSGIAppServer(apps.wsgi_app(verifier, calls)) as wsgi:
        yield {"asgi": asgi, "wsgi": wsgi}, calls, verifier


@pytest.fixture(params=["asgi", "wsgi"])
def service(request, servers):
    by_kind, calls, verifier = servers
    calls.n = 0
    with httpx.Client(base_url=by_kind[request.param].url, timeout=5) as client:
        yield client, calls, verifier


def bearer(token: bytes) -> dict:
    return {"authorization": f"Bearer {to_text(token)}"}


def tok(issuer, **kw) -> bytes:
    kw.setdefault("scope", [(RES, OP)])
    return mint(issuer, sub="dev-0001", **kw)


def problem_of(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["code"] == code and body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


def test_a_valid_token_reaches_the_handler_with_its_claims(service, issuer):
    client, calls, _ = service
    r = client.post(URL, headers=bearer(tok(issuer)), content=b"21.5")
    assert r.status_code == 201
    assert r.json() == {"sub": "dev-0001", "resource": RES, "operation": OP, "attested": [], "hop": None,
                        "bytes": 4}
    r = client.get("/sensors/temp01", headers=bearer(tok(issuer, scope=[(RES, "read")])))
    assert r.status_code == 200 and r.json()["operation"] == "read"
    assert calls.n == 2


def test_missing_token(service):
    client, calls, _ = service
    for headers in ({}, {"authorization": "Basic dXNlcjpwYXNz"}):
        r = client.post(URL, headers=headers)
        problem_of(r, 401, "missing_token")
        assert r.headers["www-authenticate"] == 'Bearer realm="crumb"'
    assert calls.n == 0


def invalid(issuer) -> dict:
    """Tokens (or header values) that are invalid in themselves: 401 invalid_token."""
    good = tok(issuer)
    flipped = bytearray(good)
    flipped[-1] ^= 1
    return {
        "malformed": "Bearer " + to_text(good)[:-3] + "!!!",
        "bad_signature": "Bearer " + to_text(bytes(flipped)),
        "unknown_key": "Bearer " + to_text(tok(SigningKey.generate())),
        "expired": "Bearer " + to_text(tok(issuer, now=int(time.time()) - 3600)),
        "not_yet_valid": "Bearer " + to_text(tok(issuer, nbf=int(time.time()) + 3600)),
        "too_large": "Bearer " + "A" * 6000,
    }


@pytest.mark.parametrize("code", ["malformed", "bad_signature", "unknown_key", "expired", "not_yet_valid",
                                  "too_large"])
def test_invalid_tokens_are_401_invalid_token(service, issuer, code):
    client, calls, _ = service
    r = client.post(URL, headers={"authorization": invalid(issuer)[code]})
    body = problem_of(r, 401, code)
    www = r.headers["www-authenticate"]
    assert www.startswith('Bearer realm="crumb", error="invalid_token", error_description="' + code + ": ")
    assert body["detail"][:20] in www
    assert calls.n == 0


def test_replayed_is_401_and_costs_the_app_nothing(service, issuer):
    client, calls, _ = service
    t = tok(issuer)
    assert client.post(URL, headers=bearer(t)).status_code == 201
    problem_of(client.post(URL, headers=bearer(t)), 401, "replayed")
    assert calls.n == 1


def test_forbidden_codes_are_403_insufficient_scope(service, issuer, nodes):
    client, calls, _ = service
    cases = {
        "scope_denied": tok(issuer, scope=[("/sensors/temp02", OP)]),
        "caveat_failed": tok(issuer, caveats=[caveat("eq", "site", "plant-7")]),
        "chain_incomplete": tok(issuer, chain=[("gateway", nodes["gateway"].public)]),
    }
    for code, t in cases.items():
        r = client.post(URL, headers={**bearer(t), "x-site": "plant-9"})
        problem_of(r, 403, code)
        assert r.headers["www-authenticate"].startswith(
            'Bearer realm="crumb", error="insufficient_scope", error_description="' + code)
    # The same caveat holds when the fact does: facts come from the request.
    r = client.post(URL, headers={**bearer(tok(issuer, caveats=[caveat("eq", "site", "plant-7")])),
                                  "x-site": "plant-7"})
    assert r.status_code == 201
    # Attested by every declared hop, the destination accepts it.
    chained = attest(tok(issuer, chain=[("gateway", nodes["gateway"].public)]), nodes["gateway"], "gateway")
    assert client.post(URL, headers=bearer(chained)).json()["attested"] == ["gateway"]
    assert calls.n == 2


def test_an_operation_the_token_lacks_is_scope_denied(service, issuer):
    client, calls, _ = service
    problem_of(client.get("/sensors/temp01", headers=bearer(tok(issuer))), 403, "scope_denied")
    assert calls.n == 0


def test_requests_no_rule_covers_are_refused_before_the_token(service, issuer):
    client, calls, _ = service
    for method, path in (("GET", "/unguarded"), ("DELETE", "/sensors/temp01"), ("GET", "/sensors/x/../temp01")):
        r = client.request(method, path, headers=bearer(tok(issuer)))
        problem_of(r, 403, "scope_denied")
    assert calls.n == 0


def test_public_routes_need_no_token_and_see_no_grant(service, issuer):
    client, calls, _ = service
    assert client.get("/healthz").text == "ok"
    assert client.get("/healthz", headers=bearer(tok(issuer))).text == "ok"
    assert calls.n == 2


def test_store_unavailable_is_503(own_redis, issuer):
    verifier = Verifier([issuer.public], replay=RedisReplayStore(own_redis.url, fence=False))
    calls = apps.Calls()
    for server in (AppServer(apps.asgi_app(verifier, calls)), WSGIAppServer(apps.wsgi_app(verifier, calls))):
        with server, httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.post(URL, headers=bearer(tok(issuer))).status_code == 201
            own_redis.stop()
            r = client.post(URL, headers=bearer(tok(issuer)))
            problem_of(r, 503, "store_unavailable")
            assert r.headers["retry-after"] == "1" and "www-authenticate" not in r.headers
            own_redis.start()
            assert client.post(URL, headers=bearer(tok(issuer))).status_code == 201
    assert calls.n == 4


def test_problem_bodies_are_json_with_the_human_message(service, issuer):
    client, _, _ = service
    body = problem_of(client.post(URL, headers=bearer(tok(issuer, scope=[("/x", OP)]))), 403, "scope_denied")
    assert "'/sensors/temp01'" in body["detail"] and "publish" in body["detail"]
    assert json.loads(json.dumps(body)) == body
