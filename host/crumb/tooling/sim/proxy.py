"""The loopback TCP proxy between the devices and the services: faults, records, captures.

Every device has its own link to each service: a listening port on
127.0.0.1 that forwards to the service. Knowing the device from the port
lets the proxy take one device offline, decide each connection's fate from
the plan (``Plan.fate``: the same fate for the same connection of the same
device on every run of a seed), and count the bytes of each device's link.

HTTP links (issuer, gateway, commands) carry one exchange per connection, as
ucrumb's client makes them (``Connection: close``): the proxy reads the whole
request, waits the link's latency, sends it on, reads the whole response,
waits again and answers. That is where the faults happen:

* link down (a device offline, the issuer in an outage window): the
  connection is reset at once, as a refused connection looks to the device;
* ``drop``: reset at once; ``stall``: held open and silent until the device
  gives up (its timeout); ``reset``: the request reaches the service, the
  device's connection is reset before the answer.

MQTT links are relayed as byte streams; the proxy reads the PUBLISH packets
going to the broker (the attacker's captures). Each connection ends in one
``exchange`` event; the attacker's ``capture`` hook sees every completed HTTP
exchange and every published envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ...issuer import protocol
from .events import Recorder
from .plan import Plan

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
HOLD = 60.0  # longest a stalled connection is held (the device's timeout ends it sooner)


class Link:
    __slots__ = ("device", "faulty", "mqtt", "n", "port", "service", "target")

    def __init__(self, device: str, service: str, target: tuple[str, int], mqtt: bool = False,
                 faulty: bool = True) -> None:
        self.device = device
        self.service = service
        self.target = target
        self.mqtt = mqtt
        self.faulty = faulty  # the link's own faults apply (not to the operator's console)
        self.port = 0
        self.n = 0  # connections so far

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _rst(writer) -> None:
    # Close with RST (SO_LINGER 0): what a refused or broken connection looks like to a device.
    # ``writer``: a StreamWriter or a transport.
    transport = getattr(writer, "transport", writer)
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    transport.abort()


def _complete(buf: bytearray) -> tuple[int, int | None] | None:
    """(head length, Content-Length or None) once ``buf`` holds a whole HTTP message head; None before."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("head too large")
        return None
    head = bytes(buf[:end])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is not None and length > MAX_BODY:
        raise ValueError("body too large")
    return end + 4, length


class Proxy:
    def __init__(self, recorder: Recorder, plan: Plan, link_up: Callable[[str], bool]) -> None:
        self.rec = recorder
        self.plan = plan
        self.link_up = link_up                  # device id -> is its Wi-Fi up now
        self.down: set[str] = set()             # services in an outage window
        self.links: list[Link] = []
        self.capture: Callable[..., None] | None = None        # (link, method, path, headers, body, status, resp)
        self.capture_mqtt: Callable[[Link, str, bytes], None] | None = None  # (link, topic, payload)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()
        self._open: set[_Exchange] = set()
        self._thread: threading.Thread | None = None
        self._closing = False

    def add(self, device: str, service: str, target: tuple[str, int], mqtt: bool = False,
            faulty: bool = True) -> Link:
        link = Link(device, service, target, mqtt, faulty)
        self.links.append(link)
        return link

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Proxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                import uvloop  # the proxy's own CPU counts against the simulator: use the fast loop

                loop = uvloop.new_event_loop()
            except ImportError:
                loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sim-proxy", daemon=True)
        self._thread.start()
        ready.wait(60)
        if failure:
            raise failure[0]
        return self

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        for link in self.links:
            if link.mqtt:
                server = await asyncio.start_server(lambda r, w, link=link: self._spawn(self._mqtt(link, r, w)),
                                                    "127.0.0.1", 0, backlog=64)
            else:
                server = await loop.create_server(lambda link=link: _Exchange(self, link), "127.0.0.1", 0,
                                                  backlog=128)
            link.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """Close every listener and connection (the devices see their links go down)."""
        if self.loop is None:
            return
        self._closing = True

        async def shut() -> None:
            for s in self._servers:
                s.close()
            for t in list(self._tasks):
                t.cancel()
            for x in list(self._open):
                x.abort()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):  # best effort at the end of a run
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _fate(self, link: Link, n: int) -> tuple[str, float, float]:
        if not link.faulty:
            return "ok", 0.0, 0.0
        return self.plan.fate(link.device, link.service, n, self.plan.link_at(self.rec.now()))

    # -- HTTP links ------------------------------------------------------------------------------
    # Protocol objects rather than streams: a connection costs a few callbacks, no task per
    # read, which keeps the proxy's own CPU small next to the services' (sim_cpu_share).

    def _finish(self, ev: dict[str, Any], t0: float, up: int, down: int) -> None:
        ev["ms"] = round((time.monotonic() - t0) * 1000, 2)
        ev["up"], ev["down"] = up, down
        self.rec.emit("exchange", **ev)

    def _observe(self, link: Link, ev: dict, head: bytes, body: bytes, rhead: bytes, rbody: bytes) -> None:
        # Status, refusal code and token counts of one exchange, and the attacker's capture.
        try:
            status = int(rhead[9:12])
        except ValueError:
            status = 0
        ev["status"] = status
        if link.service == "issuer":
            try:
                ev["requested"] = protocol.parse_cbor_request(body).n_tokens
            except Exception:  # noqa: BLE001 - a request the issuer refuses as malformed
                ev["requested"] = 0
            try:
                r = protocol.parse_response(rbody)
                ev["issued"] = len(r.tokens)
                ev["code"] = r.code or ""
            except Exception:  # noqa: BLE001 - not a crumb answer
                ev["issued"], ev["code"] = 0, "garbage"
            if ev["issued"]:
                self.rec.bump("tokens", ev["issued"])
        elif status >= 400:
            try:
                ev["code"] = json.loads(rbody).get("code", "")
            except (ValueError, AttributeError):
                ev["code"] = ""
        if self.capture is not None:
            line, _, rest = head.partition(b"\r\n")
            parts = line.split(b" ")
            headers = {}
            for h in rest.split(b"\r\n"):
                k, _, v = h.partition(b":")
                if k:
                    headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
            with contextlib.suppress(Exception):  # the attacker must never break the devices' traffic
                self.capture(link, parts[0].decode(), parts[1].decode(), headers, body, status, rbody)

    # -- MQTT links -----------------------------------------------------------------------------------
    async def _mqtt(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic()
        n = link.n
        link.n += 1
        ev: dict[str, Any] = {"device": link.device, "service": link.service}
        counts = [0, 0]
        try:
            if self._closing or not self.link_up(link.device):
                ev["fate"] = "offline"
                _rst(writer)
                return
            fate, lat_up, lat_down = self._fate(link, n)
            ev["fate"] = "drop" if fate == "drop" else "ok"
            if fate == "drop":
                _rst(writer)
                return
            try:
                ur, uw = await asyncio.open_connection(*link.target)
            except OSError:
                ev["fate"] = "service_down"
                _rst(writer)
                return
            parser = _PublishParser(lambda topic, payload: self._published(link, topic, payload))

            async def pump(src, dst, i: int, lat: float, watch: bool) -> None:
                try:
                    while data := await src.read(65536):
                        counts[i] += len(data)
                        if watch:
                            parser.feed(data)
                        if lat:
                            await asyncio.sleep(lat)
                        dst.write(data)
                        await dst.drain()
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass
                finally:
                    dst.close()

            await asyncio.gather(pump(reader, uw, 0, lat_up, True), pump(ur, writer, 1, lat_down, False))
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            ev["ms"] = round((time.monotonic() - t0) * 1000, 2)
            ev["up"], ev["down"] = counts
            self.rec.emit("exchange", **ev)

    def _published(self, link: Link, topic: str, payload: bytes) -> None:
        if self.capture_mqtt is not None:
            with contextlib.suppress(Exception):  # as above: capturing never breaks the traffic
                self.capture_mqtt(link, topic, payload)


class _PublishParser:
    """Finds the PUBLISH packets (MQTT 3.1.1) in a client's byte stream."""

    def __init__(self, on_publish: Callable[[str, bytes], None]) -> None:
        self.buf = bytearray()
        self.on_publish = on_publish

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            b = self.buf
            if len(b) < 2:
                return
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(b):
                    return
                byte = b[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
                if i > 4:
                    self.buf.clear()  # not MQTT: stop looking
                    return
            if len(b) < i + length:
                return
            packet = bytes(b[i:i + length])
            kind = b[0]
            del b[:i + length]
            if kind >> 4 == 3:
                tl = int.from_bytes(packet[:2], "big")
                topic = packet[2:2 + tl].decode("utf-8", "replace")
                start = 2 + tl + (2 if (kind >> 1) & 3 else 0)
                self.on_publish(topic, packet[start:])


class _Exchange(asyncio.Protocol):
    """One device connection on an HTTP link: read the request, apply its fate, relay one exchange."""

    def __init__(self, proxy: Proxy, link: Link) -> None:
        self.p = proxy
        self.link = link
        self.t0 = time.monotonic()
        self.n = link.n
        link.n += 1
        self.ev: dict[str, Any] = {"device": link.device, "service": link.service}
        self.buf = bytearray()
        self.req: bytes | None = None
        self.head_len = 0
        self.fate = "ok"
        self.lat_down = 0.0
        self.up: _Upstream | None = None
        self.t: asyncio.Transport | None = None
        self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.t = transport
        p, link = self.p, self.link
        if p._closing or not p.link_up(link.device):
            return self._end("offline", rst=True)
        if link.service in p.down:
            return self._end("outage", rst=True)
        self.fate, self.lat_up, self.lat_down = p._fate(link, self.n)
        self.ev["fate"] = self.fate
        if self.fate == "drop":
            return self._end("drop", rst=True)
        p._open.add(self)
        self.timer = p.loop.call_later(HOLD, self.abort)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.req is not None:
            return  # one exchange per connection
        self.buf += data
        try:
            got = _complete(self.buf)
        except ValueError:
            return self._end("client_gone", rst=True)
        if got is None or len(self.buf) < got[0] + (got[1] or 0):
            return
        self.head_len = got[0]
        self.req = bytes(self.buf[:got[0] + (got[1] or 0)])
        if self.fate == "stall":
            return  # held open and silent until the device gives up
        if self.lat_up:
            self.p.loop.call_later(self.lat_up, self._upstream)  # type: ignore[union-attr]
        else:
            self._upstream()

    def _upstream(self) -> None:
        if self.done:
            return
        loop = self.p.loop
        fut = asyncio.ensure_future(loop.create_connection(lambda: _Upstream(self), *self.link.target))  # type: ignore[union-attr]
        fut.add_done_callback(self._connected)

    def _connected(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            if not self.done:
                self._end("service_down", rst=True)  # the device sees a refused service
            return
        transport, up = fut.result()
        if self.done:
            transport.abort()
            return
        self.up = up
        transport.write(self.req)

    def answered(self, resp: bytes, head_len: int) -> None:
        if self.done:
            return
        req = self.req or b""
        self.p._observe(self.link, self.ev, req[:self.head_len], req[self.head_len:], resp[:head_len],
                        resp[head_len:])
        if self.fate == "reset":
            return self._end("reset", rst=True, up=len(req))
        if self.lat_down:
            self.p.loop.call_later(self.lat_down, self._answer, resp)  # type: ignore[union-attr]
        else:
            self._answer(resp)

    def _answer(self, resp: bytes) -> None:
        if self.done or self.t is None:
            return
        self.t.write(resp)
        self.t.close()
        self._end(None, up=len(self.req or b""), down=len(resp))

    def upstream_failed(self) -> None:
        self._end("service_broke", rst=True, up=len(self.req or b""))

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if not self.done:
            self._end("client_gone" if self.fate != "stall" else "stall", up=len(self.req or b""))

    def abort(self) -> None:
        if not self.done:
            self._end(self.ev.get("fate", "ok") if self.fate == "stall" else "timeout", rst=True,
                      up=len(self.req or b""))

    def _end(self, fate: str | None, rst: bool = False, up: int = 0, down: int = 0) -> None:
        if self.done:
            return
        self.done = True
        if fate is not None:
            self.ev["fate"] = fate
        if rst and self.t is not None:
            _rst(self.t)
        if self.up is not None:
            self.up.close()
        if self.timer is not None:
            self.timer.cancel()
        self.p._open.discard(self)
        self.p._finish(self.ev, self.t0, up, down)


class _Upstream(asyncio.Protocol):
    """The proxy's connection to the service for one exchange: send the request, collect the answer."""

    def __init__(self, ex: _Exchange) -> None:
        self.ex = ex
        self.buf = bytearray()
        self.t: asyncio.Transport | None = None
        self.got: tuple[int, int] | None = None
        self.delivered = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.got is None:
            try:
                self.got = _complete(self.buf)
            except ValueError:
                return self._fail()
        if self.got is not None and self.got[1] is not None and len(self.buf) >= self.got[0] + self.got[1]:
            self._deliver()

    def _deliver(self) -> None:
        if not self.delivered and self.got is not None and self.got[1] is not None:
            self.delivered = True
            self.ex.answered(bytes(self.buf[:self.got[0] + self.got[1]]), self.got[0])
            self.close()

    def eof_received(self) -> bool:
        if not self.delivered:
            if self.got is not None and self.got[1] is None:  # no Content-Length: the body ends here
                self.got = (self.got[0], len(self.buf) - self.got[0])
                self._deliver()
            else:
                self._fail()
        return False

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        if not self.delivered:
            self._fail()

    def _fail(self) -> None:
        if not self.delivered:
            self.delivered = True
            self.ex.upstream_failed()
            self.close()

    def close(self) -> None:
        if self.t is not None:
            self.t.close()
