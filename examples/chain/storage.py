"""Hop 3, the storage worker: the last declared hop. Accepts a reading only if gateway and ingest attested, in order.

Two ways to run it:

- by default it verifies the token itself (the middleware, hop "storage") and
  keeps readings in memory;
- with ``CRUMB_PG_DSN`` it stores readings in PostgreSQL and leaves the
  decision to the database: it passes the token on (``SET LOCAL crumb.token``)
  and inserts the row, and the table's row-level security policy
  (storage.sql) verifies the token with crumb's verifier inside the server,
  requires that the gateway and then ingest attested it, and spends its use
  in the same transaction as the row. A refusal comes back as the same
  problem response the middleware would give, with the database's code.
"""

import os

import service_config as cfg
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crumb.services.middleware import CrumbMiddleware

readings: list[dict] = []  # without CRUMB_PG_DSN: kept in memory
replica = os.environ.get("CRUMB_REPLICA", "storage")
PG_DSN = os.environ.get("CRUMB_PG_DSN")


async def reading(request):
    grant = request.state.crumb
    record = await request.json()
    readings.append(record)
    return JSONResponse({"stored": len(readings), "replica": replica, "sensor": record.get("sensor"),
                         "device": grant.sub, "attested_by": grant.attested}, status_code=201)


async def healthz(request):
    return PlainTextResponse("ok")


if PG_DSN:
    import asyncio

    import psycopg

    from crumb.errors import CrumbError
    from crumb.services.middleware import bearer_token, problem
    from crumb.token import to_text

    db: psycopg.AsyncConnection | None = None
    db_lock = asyncio.Lock()  # one connection, one transaction at a time: enough for an example
    stored = 0

    def refusal(code: str, detail: str) -> Response:
        status, headers, body = problem(code, detail, realm="storage")
        return Response(body, status_code=status, headers=dict(headers))

    async def pg_reading(request):
        global db, stored
        try:  # only the header's shape is checked here: the token itself is the database's to verify
            token = to_text(bearer_token(request.headers.getlist("authorization")))
        except CrumbError as e:
            return refusal(e.code, e.message)
        record = await request.json()
        sensor = request.path_params["sensor"]
        async with db_lock:
            if db is None or db.closed:
                db = await psycopg.AsyncConnection.connect(PG_DSN)
            try:
                async with db.transaction():
                    await db.execute("SELECT set_config('crumb.token', %s, true)", (token,))
                    await db.execute("INSERT INTO readings (sensor, value, device, received_at) VALUES (%s, %s, %s, %s)",
                                     (sensor, record.get("value"), record.get("device"), record.get("received_at")))
                    claims = (await (await db.execute("SELECT crumb.claims()")).fetchone())[0]
            except psycopg.Error as e:
                primary, code = e.diag.message_primary or "", e.diag.message_detail
                if code and "crumb: " in primary:  # crumb's refusal: its stable code is the DETAIL
                    return refusal(code, primary.split(": ", 3)[-1])
                if e.sqlstate == "42501":  # the policy itself said no (a row the token does not cover)
                    return refusal("scope_denied", "the token does not cover this reading (row-level security)")
                raise
            stored += 1
        return JSONResponse({"stored": stored, "replica": replica, "sensor": sensor, "device": claims["sub"],
                             "attested_by": claims["attested_by"], "database": "postgresql"}, status_code=201)

    app = Starlette(routes=[Route("/sensors/{sensor}/readings", pg_reading, methods=["POST"]),
                            Route("/healthz", healthz)])
else:
    app = CrumbMiddleware(
        Starlette(routes=[Route("/sensors/{sensor}/readings", reading, methods=["POST"]),
                          Route("/healthz", healthz)]),
        cfg.verifier("storage"), cfg.RULE, service_log=cfg.service_log("storage"),
    )
