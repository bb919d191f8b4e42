"""The same tiny sensor service as a Starlette (ASGI) app and a Flask (WSGI) app."""

from __future__ import annotations

from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route as StarletteRoute

from crumb.services.middleware import ENVIRON_KEY, CrumbMiddleware, CrumbWSGIMiddleware, Route, Routes

RULE = Routes(
    Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"),
    Route("/sensors/{sensor}", methods={"GET": "read"}),
    Route("/healthz", public=True),
)


def site_fact(info):
    """An application fact for caveats: the site the request came in through."""
    return {"site": info.headers.get("x-site", "")}


class Calls:
    def __init__(self) -> None:
        self.n = 0


def grant_json(grant) -> dict:
    return {"sub": grant.sub, "resource": grant.resource, "operation": grant.operation,
            "attested": grant.attested, "hop": grant.hop}


def asgi_app(verifier, calls: Calls, **kw):
    async def readings(request: Request):
        calls.n += 1
        assert request.scope["crumb"] is request.state.crumb
        body = await request.body()
        return JSONResponse({**grant_json(request.state.crumb), "bytes": len(body)}, status_code=201)

    async def sensor(request: Request):
        calls.n += 1
        return JSONResponse(grant_json(request.state.crumb))

    async def healthz(request: Request):
        calls.n += 1
        return PlainTextResponse("leak" if getattr(request.state, "crumb", None) is not None else "ok")

    app = Starlette(routes=[
        StarletteRoute("/sensors/{sensor}/readings", readings, methods=["POST"]),
        StarletteRoute("/sensors/{sensor}", sensor),
        StarletteRoute("/healthz", healthz),
        StarletteRoute("/unguarded", healthz),
    ])
    app.add_middleware(CrumbMiddleware, verifier=verifier, rule=RULE, facts=site_fact, **kw)
    return app


def wsgi_app(verifier, calls: Calls, **kw):
    app = Flask("sensors")

    @app.post("/sensors/<sensor>/readings")
    def readings(sensor):
        calls.n += 1
        return jsonify({**grant_json(flask_request.environ[ENVIRON_KEY]), "bytes": len(flask_request.data)}), 201

    @app.get("/sensors/<sensor>")
    def sensor(sensor):
        calls.n += 1
        return jsonify(grant_json(flask_request.environ[ENVIRON_KEY]))

    @app.get("/healthz")
    @app.get("/unguarded")
    def healthz():
        calls.n += 1
        return "leak" if ENVIRON_KEY in flask_request.environ else "ok"

    app.wsgi_app = CrumbWSGIMiddleware(app.wsgi_app, verifier, RULE, facts=site_fact, **kw)
    return app
