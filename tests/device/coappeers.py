"""Real CoAP peers on loopback for the device tests: a verifying service (crumb.services.coap.CoapGuard
under aiocoap, in a thread with its own event loop) and a UDP proxy that loses and duplicates datagrams."""

from __future__ import annotations

import asyncio
import json
import random
import select
import socket
import threading
import time
from typing import Self

import aiocoap
from aiocoap import Code, Message

from crumb.coapbinding import bound_port, server_context
from crumb.replay import MemoryReplayStore
from crumb.services.coap import CoapGuard
from crumb.services.keyfetch import FetchedKeys
from crumb.verify import Verifier

# The resources the service verifies for: every one answers {"sub", "resource", "body"} as JSON.
PATHS = (("sensors", "t1"), ("sensors", "t2"), ("sensors", "x"), ("config", "x"), ("admin", "x"))


class CoapService:
    """A CoAP service verifying every request with crumb.Verifier (keys from the issuer's GET /keys)."""

    def __init__(self, issuer_url: str, verifier: Verifier | None = None, guard_kw: dict | None = None) -> None:
        self.verifier = verifier or Verifier([], resolver=FetchedKeys(issuer_url.rstrip("/") + "/keys",
                                                                       min_interval=0.0),
                                             replay=MemoryReplayStore(fence=False))
        self.guard_kw = guard_kw or {}
        self.guards: list[CoapGuard] = []

    @property
    def accepted(self) -> int:
        return sum(g.accepted for g in self.guards)

    def rejected(self, code: str) -> int:
        return sum(g.rejected[code] for g in self.guards)

    async def _handle(self, request: Message, payload: bytes, grant) -> Message:
        doc = {"sub": grant.sub, "resource": grant.resource, "body": payload.decode("latin-1")}
        return Message(code=Code.CONTENT if request.code == Code.GET else Code.CHANGED,
                       payload=json.dumps(doc).encode(), content_format=50)

    def __enter__(self) -> Self:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start() -> None:
            site = aiocoap.resource.Site()
            for path in PATHS:
                guard = CoapGuard(self.verifier, self._handle, "/" + "/".join(path), **self.guard_kw)
                self.guards.append(guard)
                site.add_resource(guard.segments, guard)
            self.context = await server_context(site, "127.0.0.1", 0)
            self.port = bound_port(self.context)
            self.url = f"coap://127.0.0.1:{self.port}"
            started.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not started.wait(30):
            raise RuntimeError("the CoAP service did not start")
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.context.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class LossyProxy:
    """UDP between clients and ``target``: each datagram, either way, is dropped with probability
    ``loss`` or else sent twice with probability ``dup``, decided by a Random(seed) in arrival order.
    ``dropped`` and ``duplicated`` count what it did (a test asserts both happened)."""

    def __init__(self, target_port: int, seed: int, loss: float = 0.1, dup: float = 0.1) -> None:
        self.target = ("127.0.0.1", target_port)
        self.rng = random.Random(seed)
        self.loss, self.dup = loss, dup
        self.dropped = self.duplicated = self.forwarded = 0
        self._up: dict[tuple, socket.socket] = {}  # client address -> its socket towards the target
        self._down: dict[socket.socket, tuple] = {}

    def __enter__(self) -> Self:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"coap://127.0.0.1:{self.port}"
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _pass(self, s: socket.socket, data: bytes, to: tuple) -> None:
        r = self.rng.random()
        if r < self.loss:
            self.dropped += 1
            return
        s.sendto(data, to)
        self.forwarded += 1
        if r < self.loss + self.dup:
            self.duplicated += 1
            s.sendto(data, to)

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock, *self._down], [], [], 0.1)
            for s in ready:
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                if s is self.sock:
                    up = self._up.get(addr)
                    if up is None:
                        up = self._up[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(self.target)
                        self._down[up] = addr
                    self._pass(up, data, self.target)
                else:
                    self._pass(self.sock, data, self._down[s])

    def __exit__(self, *exc) -> None:
        self._stop = True
        self.thread.join(5)
        for s in [self.sock, *self._down]:
            s.close()


def wait_until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
