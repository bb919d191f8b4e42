"""Hop 1, the edge gateway: checks the token, attests, passes the request on unchanged.

No application code at all: the middleware verifies and attests (node_key=),
Forward sends the request to the ingest API with the attested token and
returns its answer.
"""

import service_config as cfg
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from crumb.services.middleware import CrumbMiddleware, Forward

key = cfg.node_key()
forward = Forward(cfg.next_hop())


async def healthz(request):
    return PlainTextResponse("ok")


app = CrumbMiddleware(
    Starlette(routes=[Route("/healthz", healthz), Mount("/", app=forward)]),
    cfg.verifier("gateway"), cfg.RULE, node_key=key, service_log=cfg.service_log("gateway", key),
)
