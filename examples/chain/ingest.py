"""Hop 2, the ingest API: checks the token, validates the reading, attests, sends it to storage."""

import time

import httpx
import service_config as cfg
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crumb.services.middleware import CrumbMiddleware, attest_and_forward_async

key = cfg.node_key()
storage = cfg.next_hop()
client = httpx.AsyncClient(timeout=10)


async def reading(request):
    grant = request.state.crumb
    try:
        body = await request.json()
        value = body["value"]
    except (ValueError, KeyError, TypeError):
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return JSONResponse({"error": 'send {"value": <number>}'}, status_code=422)
    record = {"sensor": request.path_params["sensor"], "value": value, "device": grant.sub,
              "received_at": time.time()}
    resp = await attest_and_forward_async(grant, f"{storage}{request.url.path}", client=client,
                                          node_key=key, json=record)
    return Response(resp.content, status_code=resp.status_code,
                    media_type=resp.headers.get("content-type"))


async def healthz(request):
    return PlainTextResponse("ok")


app = CrumbMiddleware(
    Starlette(routes=[Route("/sensors/{sensor}/readings", reading, methods=["POST"]),
                      Route("/healthz", healthz)]),
    cfg.verifier("ingest"), cfg.RULE, service_log=cfg.service_log("ingest", key),
)
