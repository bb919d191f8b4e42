"""Bounds on what a client may make the server hold: the request head's size and header count, and time.

uvicorn's httptools protocol reads a request head of any size (llhttp has no
limit of its own: an 8 MiB header was read whole and the request answered)
and only times out a connection between requests (keep-alive), so a client
that opens a connection and sends nothing, or sends its head or body a byte
at a time, holds the connection for ever (slowloris). This protocol class
adds, per connection:

- the request head (request line and header lines, as received) at most
  ``max_header_bytes``, with at most ``max_headers`` header lines: else
  431 Request Header Fields Too Large, and the connection is closed;
- the head complete within ``header_timeout`` seconds of the connection
  opening, or of the first byte of a later request on it; the body complete
  within ``body_timeout`` seconds of the head's end: else 408 Request
  Timeout (when no response is under way on the connection), and closed;
- ``keep_alive_timeout`` seconds idle between requests (uvicorn's own timer).

The head is measured by the bytes received while it is incomplete (so a
head that never ends is cut off once it passes the limit, and the server
holds at most the limit plus one read), and once it is complete, when those
bytes cannot bound it (the read also held a body over the limit, or the end
of an earlier request), from the parsed request line and headers. A refused
request never reaches the application. Blank lines, which HTTP allows
before a request, are on the head's clock too: uvicorn stops its keep-alive
timer for any bytes, and a client that sent one CRLF after each answer
would otherwise hold the connection for ever.

Costs: a request that arrives in one read (every device request) arms no
timer and is not measured header by header; the connection's first arms
one, cancelled when its head is in.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from .onewrite import OneWriteHttpToolsProtocol

# What each limit may be set to (`crumb issuer serve` options): a limit that cannot be met, or none at all, is refused.
RANGES: dict[str, tuple[float, float]] = {
    "max_header_bytes": (1024, 1 << 20), "max_headers": (8, 1000), "header_timeout": (0.1, 3600.0),
    "body_timeout": (0.1, 3600.0), "keep_alive_timeout": (1.0, 3600.0)}


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may take. The defaults fit any device and any HTTP client; see docs/issuer.md §1."""

    max_header_bytes: int = 8192    # request line and headers, as received
    max_headers: int = 64           # header lines in one request
    header_timeout: float = 10.0    # seconds from connecting (or a later request's first byte) to the head's end
    body_timeout: float = 10.0      # seconds from the head's end to the body's
    keep_alive_timeout: float = 30.0  # seconds idle between requests

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} is {low} to {high}, not {value}")


_IDLE, _HEAD, _BODY, _APP = range(4)  # waiting for a request; reading its head; its body; the app has it
_LINGER_S = 1.0          # after a refusal, how long the rest of a request is read and dropped...
_LINGER_BYTES = 1 << 16  # ...and how much of it, so the client can read the answer before the close
_REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n\r\n")  # what the parsed method and URL leave out of the request line


class BoundedHttpToolsProtocol(OneWriteHttpToolsProtocol):
    """uvicorn's httptools protocol (one write per response) with the bounds of ``limits``."""

    limits = HttpLimits()

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._received = 0        # bytes received since the last request ended (the head, while it lasts)
        self._recount = False     # a request ended inside this read: the next head's count starts short
        self._exact = False       # measure this head from its parsed parts (its count may be short)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_phase = _IDLE
        self._lingering = -1      # bytes still accepted (and dropped) after a refusal; -1: no refusal
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]

    # -- the connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(_HEAD, self.limits.header_timeout)  # a connection that never sends a request is closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:  # refused: drop the rest, up to a point, then close
            self._lingering -= len(data)
            if self._lingering < 0:
                self.transport.close()
            return
        if self._phase != _BODY:  # a head starts somewhere in here (or carries on)
            self._received += len(data)
        self._recount = False
        super().data_received(data)
        phase = self._phase
        if phase == _APP:  # every request in this read is whole (nearly every read): nothing to time...
            if self._timer is not None:
                self._disarm()
            if self.cycle.response_complete and self.timeout_keep_alive_task is None \
                    and not self.transport.is_closing():
                # ...unless this read began no request (blank lines, which HTTP allows before one) after an
                # answer: uvicorn stopped its keep-alive timer for it. It is a head's start, on the head's clock.
                self._arm(_HEAD, self.limits.header_timeout)
            return
        if self._lingering >= 0 or self.transport.is_closing():
            return
        if phase == _HEAD:
            # uvicorn keeps the header lines parsed so far in self.headers
            if self._received > self.limits.max_header_bytes or len(self.headers) > self.limits.max_headers:
                self._refuse_head()
            elif self._timer_phase != _HEAD:
                self._arm(_HEAD, self.limits.header_timeout)
        elif phase == _BODY and self._timer_phase != _BODY:
            self._arm(_BODY, self.limits.body_timeout)
        # _IDLE: no request yet, only blank lines: the connection's first timer (connection_made) runs on

    # -- parser callbacks (uvicorn's, plus the phase) ---------------------------------

    def on_message_begin(self) -> None:
        if self._lingering >= 0:
            return
        super().on_message_begin()
        self._phase = _HEAD
        self._exact = self._recount

    def on_headers_complete(self) -> None:
        if self._lingering >= 0:
            return
        self._phase = _BODY
        limits = self.limits
        # The bytes received bound the head from above; only a read that also held a body (or the end
        # of an earlier request) needs the head measured from its parts.
        measure = self._received > limits.max_header_bytes or self._exact
        if len(self.headers) > limits.max_headers or (measure and self._head_size() > limits.max_header_bytes):
            self._refuse_head()
            return
        super().on_headers_complete()

    def _head_size(self) -> int:
        """The request line and headers as parsed (what llhttp drops, optional whitespace, is not counted)."""
        size = _REQUEST_LINE_EXTRA + len(self.parser.get_method()) + len(self.url)
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        return size

    def on_body(self, body: bytes) -> None:
        if self._lingering < 0:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering >= 0:
            return
        super().on_message_complete()
        self._phase = _APP
        self._received = 0
        self._recount = True  # more of this read may follow: a pipelined request, counted from here short

    # -- refusing --------------------------------------------------------------------

    def _answer(self, status: int, reason: str, message: str, *, current: bool = False) -> None:
        """Write a whole response (JSON, as the app's other errors), unless another is under way on this
        connection. ``current``: the cycle is this request's, and the answer is to it, so only while the
        app has sent nothing for it (an app may answer before it has read the body: one answer each)."""
        cycle = self.cycle
        if current:
            idle = cycle is None or not cycle.response_started
        else:
            idle = cycle is None or cycle.response_complete
        if idle and not self.pipeline:
            body = json.dumps({"error": message, "status": status}).encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))

    def _refuse_head(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            message = f"more than {limits.max_headers} header lines"
        else:
            message = f"the request line and headers exceed {limits.max_header_bytes} bytes"
        self._answer(431, "Request Header Fields Too Large", message)
        self._linger()

    def _linger(self) -> None:
        # Closing with unread bytes in the socket would send a reset, which may destroy the answer
        # before the client reads it: read a little more (and drop it), for a moment, then close.
        self._disarm()
        self._lingering = _LINGER_BYTES
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(_LINGER_S, transport.close)

    # -- timers ----------------------------------------------------------------------

    def _arm(self, phase: int, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, phase)
        self._timer_phase = phase

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_phase = _IDLE

    def _timed_out(self, phase: int) -> None:
        self._timer = None
        self._timer_phase = _IDLE
        if self.transport.is_closing() or self._lingering >= 0:
            return
        limits = self.limits
        what = (f"the request head was not complete within {limits.header_timeout:g} s" if phase == _HEAD
                else f"the request body was not complete within {limits.body_timeout:g} s")
        self._answer(408, "Request Timeout", what, current=phase == _BODY)
        cycle = self.cycle
        if phase == _BODY and cycle is not None and not cycle.response_complete:
            # The app may be waiting for the rest of this body: it now sees a disconnect, and its
            # answer, if it tries one, goes nowhere (uvicorn drops what is sent after a disconnect).
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def protocol_for(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
