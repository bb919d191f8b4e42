"""Serving: uvicorn on a socket we bind ourselves, in one process or several.

Several processes each bind the same address with SO_REUSEPORT, so the
kernel spreads connections across them (no accept() thundering herd, no
supervisor on the request path). They only agree on nonces, rate limits and
revocations through Redis, so `serve` refuses more than one process without it.
The bench serves its bare ASGI baseline through this same function.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

import uvicorn

from .httplimits import HttpLimits, protocol_for


def _fast(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def bind(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app, log_level: str = "warning", limits: HttpLimits | None = None) -> uvicorn.Config:
    """uvicorn serving ``app`` with httptools (crumb's issuer extra requires it: the bounds on
    request heads and slow clients are in its protocol class, httplimits.py; there is no
    fallback to h11 without them), one write per response, and ``limits``."""
    limits = limits if limits is not None else HttpLimits()
    return uvicorn.Config(
        app,
        loop="uvloop" if _fast("uvloop") else "asyncio",
        http=protocol_for(limits),
        interface="asgi3",  # said, not guessed: IssuerApp.__call__ is a plain function returning a coroutine
        lifespan="on",
        access_log=False,
        log_level=log_level,
        server_header=False,
        timeout_keep_alive=int(limits.keep_alive_timeout),  # the protocol keeps the exact value
    )


def serve_socket(app, sock: socket.socket, log_level: str = "warning", limits: HttpLimits | None = None) -> None:
    server = uvicorn.Server(uvicorn_config(app, log_level, limits))
    server.run(sockets=[sock])
    if not server.started:  # lifespan startup failed: uvicorn has logged why
        sys.exit(3)


def _orphan_watch(supervisor: int) -> None:
    # A worker whose supervisor died (even by SIGKILL) shuts itself down gracefully.
    while os.getppid() == supervisor:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(factory: Callable[[], object], host: str, port: int, log_level: str, supervisor: int,
            limits: HttpLimits | None) -> None:
    if os.getppid() != supervisor:  # it died while this process was starting
        return
    threading.Thread(target=_orphan_watch, args=(supervisor,), daemon=True).start()
    sock = bind(host, port, reuse_port=True)
    serve_socket(factory(), sock, log_level, limits)


def serve(factory: Callable[[], object], host: str, port: int, processes: int = 1,
          log_level: str = "warning", ready: Callable[[int], None] | None = None,
          limits: HttpLimits | None = None) -> None:
    """Serve the app made by ``factory`` (a picklable callable) until SIGINT/SIGTERM.

    Port 0 is any free port; ``ready`` is told the port bound, once it is.
    ``limits``: request heads and slow clients (httplimits.HttpLimits; its defaults when None).
    """
    if processes <= 1:
        sock = bind(host, port, reuse_port=False)
        if ready:
            ready(sock.getsockname()[1])
        serve_socket(factory(), sock, log_level, limits)
        return
    # Bind (without listening, so it receives no connections) here first: a busy
    # port fails now, in the parent, with a clear error; port 0 becomes the port
    # the workers share.
    probe = bind(host, port, reuse_port=True, listen=False)
    port = probe.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(factory, host, port, log_level, os.getpid(), limits), daemon=False)
               for _ in range(processes)]
    for w in workers:
        w.start()
    if ready:
        ready(port)

    def stop(signum, frame) -> None:
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.join()
    probe.close()
    codes = [w.exitcode for w in workers]
    if any(c not in (0, -signal.SIGTERM, None) for c in codes):
        sys.exit(3)
