"""`crumb bench middleware`: what the ASGI middleware adds to a request, over loopback HTTP.

One server process runs uvicorn twice on one event loop, serving the same
tiny Starlette endpoint: bare on one port, behind CrumbMiddleware (pinned
issuer key, in-memory replay store, a path-template rule) on the other. The
client (this process) sends requests one at a time over a keep-alive
connection to each, alternating bare/guarded on every round so machine noise
hits both alike; every guarded request carries a fresh single-use token.
The overhead is the difference of the two median latencies. The same
comparison in-process (the ASGI apps called directly, no network) shows the
middleware's own cost without HTTP noise.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import time

import click

from ...extras import require

RESOURCE, OPERATION, PATH = "/sensors/temp01", "publish", "/sensors/temp01/readings"
GOAL_MS = 0.25


def _apps(issuer_public: bytes):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute

    from ...keys import PublicKey
    from ...replay import MemoryReplayStore
    from ...services.middleware import CrumbMiddleware, Route, Routes
    from ...verify import Verifier

    async def reading(request):
        return PlainTextResponse("ok")

    bare = Starlette(routes=[StarletteRoute(PATH, reading, methods=["POST"])])
    # The benchmark's own server, with no earlier life to fence off: tokens minted right after it starts pass.
    verifier = Verifier([PublicKey(issuer_public)], replay=MemoryReplayStore(fence=False))
    rule = Routes(Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation=OPERATION))
    return bare, CrumbMiddleware(bare, verifier, rule)


def _serve(issuer_public: bytes, ports, stop) -> None:
    """Server process: both variants on one event loop until ``stop`` is set."""
    import asyncio

    import uvicorn

    from ..localservices import HOST, listening_socket

    bare, guarded = _apps(issuer_public)
    # Sockets bound here, on port 0: no other program can take a port between our choice and the bind.
    socks = [listening_socket(HOST) for _ in (bare, guarded)]
    servers = [uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
               for app in (bare, guarded)]

    async def main() -> None:
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, socks)]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.01)
        ports.put([sock.getsockname()[1] for sock in socks])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)

    asyncio.run(main())


def _request(conn: http.client.HTTPConnection, headers: dict) -> tuple[int, int]:
    t0 = time.perf_counter_ns()
    conn.request("POST", PATH, body=b"21.5", headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp.status, time.perf_counter_ns() - t0


def _summary(samples_ns: list[int]) -> dict:
    ms = sorted(s / 1e6 for s in samples_ns)
    return {"requests": len(ms), "requests_per_s": round(len(ms) / (sum(ms) / 1000)),
            "median_ms": round(statistics.median(ms), 4), "p90_ms": round(ms[int(len(ms) * 0.9)], 4)}


def _inprocess(issuer, rounds: int) -> dict:
    """Median time of one request through each ASGI app, called directly (no HTTP)."""
    import asyncio

    from ...keys import b64u
    from ...token import mint

    bare, guarded = _apps(issuer.public.raw)
    tokens = [b64u(mint(issuer, sub="dev-0001", scope=[(RESOURCE, OPERATION)])).encode() for _ in range(rounds)]

    async def receive():
        return {"type": "http.request", "body": b"21.5", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"in-process request answered {message['status']}")

    def scope(token: bytes | None) -> dict:
        headers = [(b"host", b"bench"), (b"content-length", b"4")]
        if token is not None:
            headers.append((b"authorization", b"Bearer " + token))
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
                "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}

    async def main() -> tuple[list[int], list[int]]:
        clock = time.perf_counter_ns
        plain, wrapped = [], []
        for token in tokens:
            s1, s2 = scope(None), scope(token)
            t0 = clock()
            await bare(s1, receive, send)
            t1 = clock()
            await guarded(s2, receive, send)
            t2 = clock()
            plain.append(t1 - t0)
            wrapped.append(t2 - t1)
        return plain, wrapped

    plain, wrapped = asyncio.run(main())
    p, w = statistics.median(plain) / 1e6, statistics.median(wrapped) / 1e6
    return {"without_ms_median": round(p, 4), "with_ms_median": round(w, 4), "overhead_ms_median": round(w - p, 4)}


def run(requests: int = 3000, warmup: int = 300) -> dict:
    from ...keys import SigningKey, b64u
    from ...token import mint
    from ..localservices import HOST

    issuer = SigningKey.generate()
    ctx = multiprocessing.get_context("spawn")
    ports_q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(issuer.public.raw, ports_q, stop), daemon=True)
    server.start()
    try:
        bare_port, guarded_port = ports_q.get(timeout=60)
        # Minted after the server started: its replay store's restart fence lets them in.
        tokens = ["Bearer " + b64u(mint(issuer, sub="dev-0001", scope=[(RESOURCE, OPERATION)], ttl=600))
                  for _ in range(requests + warmup)]
        conns = [http.client.HTTPConnection(HOST, p, timeout=10) for p in (bare_port, guarded_port)]
        base = {"content-type": "text/plain"}
        plain, guarded, errors = [], [], 0
        for i, token in enumerate(tokens):
            order = (0, 1) if i % 2 else (1, 0)
            for which in order:
                status, ns = _request(conns[which], base if which == 0 else {**base, "authorization": token})
                errors += status != 200
                if i >= warmup:
                    (plain if which == 0 else guarded).append(ns)
        for c in conns:
            c.close()
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()

    without, with_ = _summary(plain), _summary(guarded)
    inproc = _inprocess(issuer, min(requests, 3000))
    overhead = round(with_["median_ms"] - without["median_ms"], 4)
    return {
        "endpoint": f"POST {PATH} (Starlette, uvicorn, loopback, one keep-alive connection each)",
        "requests": requests,
        "without": without,
        "with": with_,
        "overhead_ms_median": overhead,
        "goal_ms": GOAL_MS,
        "within_goal": overhead <= GOAL_MS,
        "errors": errors,
        "inprocess": inproc,
    }


def render(r: dict) -> str:
    rows = [("", "requests/s", "median ms", "p90 ms")]
    for name in ("without", "with"):
        s = r[name]
        rows.append((f"{name} middleware", f"{s['requests_per_s']:,}", f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}"))
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [r["endpoint"] + f", {r['requests']:,} requests each, interleaved"]
    lines += ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, width)))
              for row in rows]
    ip = r["inprocess"]
    lines.append(f"  overhead_ms_median  {r['overhead_ms_median']:.3f} ms   (goal <= {r['goal_ms']} ms: "
                 f"{'met' if r['within_goal'] else 'NOT met'})")
    lines.append(f"  in-process, no HTTP: {ip['without_ms_median']:.3f} ms -> {ip['with_ms_median']:.3f} ms, "
                 f"overhead {ip['overhead_ms_median']:.3f} ms")
    if r["errors"]:
        lines.append(f"  errors: {r['errors']} requests did not answer 200")
    return "\n".join(lines)


@click.command("middleware")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--requests", default=3000, show_default=True, type=click.IntRange(min=100),
              help="Requests to each variant (after a warm-up of 300).")
def command(as_json: bool, requests: int) -> None:
    """Requests/s and median latency of one endpoint with and without CrumbMiddleware."""
    require("tools", "crumb bench middleware")
    result = run(requests=requests)
    click.echo(json.dumps(result, indent=1) if as_json else render(result))
