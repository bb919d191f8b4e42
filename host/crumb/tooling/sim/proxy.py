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
import json
import socket
import struct
import threading
import time
from typing import Any, Callable

from ...issuer import protocol
from .events import Recorder
from .plan import Plan

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
HOLD = 60.0  # longest a stalled connection is held (the device's timeout ends it sooner)


class Link:
    __slots__ = ("device", "service", "target", "mqtt", "faulty", "port", "n")

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


async def _read_message(reader: asyncio.StreamReader, until_eof: bool) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP message; the body by Content-Length, else to EOF if ``until_eof``."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ValueError("head too large")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is not None:
        if length > MAX_BODY:
            raise ValueError("body too large")
        return head, await reader.readexactly(length)
    return head, (await reader.read(MAX_BODY) if until_eof else b"")


def _rst(writer: asyncio.StreamWriter) -> None:
    # Close with RST (SO_LINGER 0): what a refused or broken connection looks like to a device.
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


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
        self._thread: threading.Thread | None = None
        self._closing = False

    def add(self, device: str, service: str, target: tuple[str, int], mqtt: bool = False,
            faulty: bool = True) -> Link:
        link = Link(device, service, target, mqtt, faulty)
        self.links.append(link)
        return link

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Proxy":
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
        for link in self.links:
            handler = self._mqtt if link.mqtt else self._http
            server = await asyncio.start_server(lambda r, w, link=link, h=handler: self._spawn(h(link, r, w)),
                                                "127.0.0.1", 0, backlog=64)
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
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        except Exception:  # noqa: BLE001 - best effort at the end of a run
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _fate(self, link: Link, n: int) -> tuple[str, float, float]:
        if not link.faulty:
            return "ok", 0.0, 0.0
        return self.plan.fate(link.device, link.service, n, self.plan.link_at(self.rec.now()))

    # -- HTTP links ------------------------------------------------------------------------------
    async def _http(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t0 = time.monotonic()
        n = link.n
        link.n += 1
        ev: dict[str, Any] = {"device": link.device, "service": link.service}
        up = down = 0
        try:
            if self._closing or not self.link_up(link.device):
                ev["fate"] = "offline"
                _rst(writer)
                return
            if link.service in self.down:
                ev["fate"] = "outage"
                _rst(writer)
                return
            fate, lat_up, lat_down = self._fate(link, n)
            ev["fate"] = fate
            if fate == "drop":
                _rst(writer)
                return
            try:
                head, body = await asyncio.wait_for(_read_message(reader, False), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError,
                    ConnectionError):
                ev["fate"] = "client_gone"
                writer.transport.abort()
                return
            up = len(head) + len(body)
            if fate == "stall":
                try:
                    await asyncio.wait_for(reader.read(), HOLD)  # until the device gives up
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                _rst(writer)
                return
            if lat_up:
                await asyncio.sleep(lat_up)
            try:
                ur, uw = await asyncio.open_connection(*link.target)
            except OSError:
                ev["fate"] = "service_down"
                _rst(writer)  # the device sees a refused service, as it would without the proxy
                return
            try:
                uw.write(head + body)
                await uw.drain()
                rhead, rbody = await asyncio.wait_for(_read_message(ur, True), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError,
                    ConnectionError):
                ev["fate"] = "service_broke"
                _rst(writer)
                return
            finally:
                uw.close()
            self._observe(link, ev, head, body, rhead, rbody)
            if fate == "reset":
                _rst(writer)
                return
            if lat_down:
                await asyncio.sleep(lat_down)
            writer.write(rhead + rbody)
            down = len(rhead) + len(rbody)
            try:
                await writer.drain()
            except ConnectionError:
                ev["fate"] = "client_gone"
            writer.close()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
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
            try:
                self.capture(link, parts[0].decode(), parts[1].decode(), headers, body, status, rbody)
            except Exception:  # noqa: BLE001 - the attacker must never break the devices' traffic
                pass

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
            try:
                self.capture_mqtt(link, topic, payload)
            except Exception:  # noqa: BLE001
                pass


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
