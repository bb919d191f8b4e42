"""Hop 3, the storage worker: the last declared hop. Accepts a reading only if gateway and ingest attested, in order."""

import os

import service_config as cfg
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from crumb.services.middleware import CrumbMiddleware

readings: list[dict] = []  # a real worker writes to a database; this one keeps them in memory
replica = os.environ.get("CRUMB_REPLICA", "storage")


async def reading(request):
    grant = request.state.crumb
    record = await request.json()
    readings.append(record)
    return JSONResponse({"stored": len(readings), "replica": replica, "sensor": record.get("sensor"),
                         "device": grant.sub, "attested_by": grant.attested}, status_code=201)


async def healthz(request):
    return PlainTextResponse("ok")


app = CrumbMiddleware(
    Starlette(routes=[Route("/sensors/{sensor}/readings", reading, methods=["POST"]),
                      Route("/healthz", healthz)]),
    cfg.verifier("storage"), cfg.RULE,
)
