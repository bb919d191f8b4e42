"""Each HTTP response's head and body in one write: uvicorn's httptools protocol, one send() per answer.

uvicorn writes a response's status line and headers when the app sends
``http.response.start``, and its body when the app sends
``http.response.body``: two send() calls, two TCP segments, and a client
that wakes up twice for one small answer. On loopback that second write
and wake-up cost more CPU than the issuer's whole policy decision (the
bench prints both sides' CPU per answer; docs/issuer.md §9).

Here the head is held back until the body's first write, in the same turn
of the event loop, and both go out together; a head with no body write in
that turn (a streaming app that waits before its first chunk) goes out
alone at the end of the turn, so nothing waits on the app. Everything
else about the connection is uvicorn's own.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_END = b"\r\n\r\n"


class _HeadWithBody:
    """A transport that joins a response head to the write that follows it."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop = loop

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif type(data) is bytes and data.startswith(b"HTTP/1.1 ") and data.endswith(_HEAD_END):
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._head) if self._head is not None else 0)

    def __getattr__(self, name: str):  # everything else is the real transport's
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
