"""onewrite: a response's head and body in one write, without holding back a head whose body is late."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from crumb.issuer.onewrite import OneWriteHttpToolsProtocol, _HeadWithBody
from crumb.tooling.localservices import AppServer

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording:
    """Stands in for the kernel's socket: what was written, in which calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_head_and_body_go_out_in_one_write_and_a_late_body_does_not_hold_the_head():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        rec = Recording()
        t = _HeadWithBody(rec, loop)
        t.write(HEAD)
        assert rec.writes == [] and t.get_write_buffer_size() == len(HEAD)
        t.write(b"ok")
        assert rec.writes == [HEAD + b"ok"]
        await asyncio.sleep(0)  # the turn's flush finds nothing left
        assert rec.writes == [HEAD + b"ok"]

        rec.writes.clear()
        t.write(HEAD)  # a streaming app: its first chunk comes later
        await asyncio.sleep(0)
        assert rec.writes == [HEAD]
        t.write(b"chunk")
        assert rec.writes == [HEAD, b"chunk"]

        rec.writes.clear()
        t.write(memoryview(b"HTTP/1.1 200 OK\r\n\r\n"))  # not bytes: passed on as it is
        assert len(rec.writes) == 1 and type(rec.writes[0]) is memoryview
        rec.writes.clear()
        t.write(b"not a head")  # anything else passes straight through
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        t.close()  # a held head is written before the close
        assert rec.writes == [b"not a head", b"HTTP/1.1 100 Continue\r\n\r\n"] and rec.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the real transport's

    asyncio.run(main())


def _late_body(head_seen: threading.Event):
    """An app whose body waits until the client has its head: the body says whether it did."""
    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        # At most 30 s: a head held back until its body would otherwise wait for ever.
        deadline = time.monotonic() + 30
        while not head_seen.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"late" if head_seen.is_set() else b"held"})

    return app


async def _at_once(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"now"})


def _exchange(port: int, head_seen: threading.Event | None = None) -> tuple[bytes, bytes]:
    """One GET: (head, body); ``head_seen`` is set once the whole head is in."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        if head_seen is not None:
            head_seen.set()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += s.recv(4096)
        return head, body


def test_served_by_uvicorn_the_head_of_a_late_body_is_not_held_back():
    # Order, not time: the body is only sent once the client has the head.
    head_seen = threading.Event()
    with AppServer(_late_body(head_seen), http=OneWriteHttpToolsProtocol, interface="asgi3") as server:
        head, body = _exchange(server.port, head_seen)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"late", "the head was held back until its body"
    with AppServer(_at_once, http=OneWriteHttpToolsProtocol, interface="asgi3") as server:
        head, body = _exchange(server.port)
        assert head.startswith(b"HTTP/1.1 200") and body == b"now"
        # keep-alive still works: a second exchange on a new connection and the same server
        assert _exchange(server.port)[1] == b"now"
