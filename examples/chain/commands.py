"""The command service: commands for actuators, outside the reading chain.

An operator (anything holding a token for the valve and the operation)
queues a command; the device polls for its own commands with a token of its
own. Both tokens are verified here, offline, like any other call:

    POST /valves/{device}/open        token for ("/valves/{device}", "open")
    POST /valves/{device}/close       token for ("/valves/{device}", "close")
    GET  /valves/{device}/commands?after=SEQ
                                      token for ("/valves/{device}", "read"),
                                      whose subject must be {device} itself

A queued command is ``{"seq", "op", "resource", "by", "at"}``: a sequence
number per device, the operation, the valve, the sender's subject and the
issuer time of its token (iat). A POST may carry a JSON body
``{"token": HEX}``: a second token of the sender's, for the same valve and
operation with the device as its audience, which is queued with the command
(``"token"``) for the device to verify itself (PROTOCOL.md §7.1); this service
does not spend it (it is not this service's audience). A poll answers the commands after SEQ and
forgets the older ones (the device has applied them). docs/device.md says
what the device checks before it applies one.
"""

import json
import os

import service_config as cfg
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route as Path

from crumb.services.middleware import CrumbMiddleware, Route, Routes

RULE = Routes(
    Route("/valves/{device}/open", resource="/valves/{device}", operation="open"),
    Route("/valves/{device}/close", resource="/valves/{device}", operation="close"),
    Route("/valves/{device}/commands", resource="/valves/{device}", operation="read"),
    Route("/healthz", public=True),
)
KEEP = int(os.environ.get("CRUMB_COMMANDS_KEEP", "16"))  # commands queued per device at most

queues: dict[str, list[dict]] = {}
last: dict[str, int] = {}


async def queue(request):
    grant = request.state.crumb
    device = request.path_params["device"]
    token = None
    body = await request.body()
    if body:
        try:
            token = json.loads(body).get("token")
            bytes.fromhex(token)
        except (ValueError, AttributeError, TypeError):
            return JSONResponse({"code": "malformed", "detail": 'the body is {"token": HEX}'}, status_code=400)
        if len(token) > 2 * 4096:
            return JSONResponse({"code": "too_large", "detail": "the token exceeds 4096 bytes"}, status_code=413)
    seq = last.get(device, 0) + 1
    last[device] = seq
    pending = queues.setdefault(device, [])
    command = {"seq": seq, "op": grant.operation, "resource": grant.resource, "by": grant.sub,
               "at": grant.claims.iat}
    if token is not None:
        command["token"] = token
    pending.append(command)
    del pending[:-KEEP]
    return JSONResponse({"queued": seq}, status_code=202)


async def poll(request):
    grant = request.state.crumb
    device = request.path_params["device"]
    if grant.sub != device:  # a device reads its own queue only
        return JSONResponse({"code": "scope_denied", "detail": "not this device's queue"}, status_code=403)
    try:
        after = int(request.query_params.get("after", "0"))
    except ValueError:
        return JSONResponse({"detail": "after must be an integer"}, status_code=422)
    pending = [c for c in queues.get(device, ()) if c["seq"] > after]
    queues[device] = pending
    return JSONResponse({"commands": pending})


async def healthz(request):
    return PlainTextResponse("ok")


app = CrumbMiddleware(
    Starlette(routes=[Path("/valves/{device}/open", queue, methods=["POST"]),
                      Path("/valves/{device}/close", queue, methods=["POST"]),
                      Path("/valves/{device}/commands", poll, methods=["GET"]),
                      Path("/healthz", healthz)]),
    cfg.verifier(None), RULE,
)
