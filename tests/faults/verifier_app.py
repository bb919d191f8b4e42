"""A verifying service for the fault tests, run by uvicorn in its own process (UvicornProcess).

Configuration from the environment, as the examples take theirs:
CRUMB_FAULT_ISSUER (the issuer's public key, hex) and CRUMB_FAULT_LEEWAY
(seconds; unset: the Verifier's default) and CRUMB_FAULT_SKEW (seconds added to
the service's clock, as a clock off by that much would read). Its replay store is the default
in-memory one, fence included: a restart forgets every use. CRUMB_FAULT_FENCE=0 turns the fence
off, for tests of something else that present tokens issued right after the service started.
``POST /sensors/{id}/readings`` needs a token for (``/sensors/{id}``, ``publish``);
it answers 201 with the subject, or crumb's problem response.
"""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from crumb import Verifier
from crumb.keys import PublicKey
from crumb.replay import DEFAULT_LEEWAY, MemoryReplayStore
from crumb.services.middleware import CrumbMiddleware, Route, Routes

RULE = Routes(Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"))


async def readings(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.state.crumb.sub, "pid": os.getpid()}, status_code=201)


def build() -> Starlette:
    kw: dict = {}
    if os.environ.get("CRUMB_FAULT_LEEWAY"):
        kw["leeway"] = int(os.environ["CRUMB_FAULT_LEEWAY"])
    skew = float(os.environ.get("CRUMB_FAULT_SKEW", "0"))
    kw["clock"] = lambda: time.time() + skew
    if os.environ.get("CRUMB_FAULT_FENCE") == "0":
        kw["replay"] = MemoryReplayStore(fence=False, leeway=kw.get("leeway", DEFAULT_LEEWAY), clock=kw["clock"])
    verifier = Verifier([PublicKey(bytes.fromhex(os.environ["CRUMB_FAULT_ISSUER"]))], **kw)
    app = Starlette(routes=[StarletteRoute("/sensors/{sensor}/readings", readings, methods=["POST"])])
    app.add_middleware(CrumbMiddleware, verifier=verifier, rule=RULE)
    return app


app = build()
