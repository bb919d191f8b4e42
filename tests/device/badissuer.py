"""A misbehaving token endpoint on loopback, for the device client's failure tests.

One listening socket; the first path segment of each request picks the
behaviour (the client is pointed at http://127.0.0.1:PORT/<behaviour>, so it
POSTs to /<behaviour>/token). Every connection is served by its own thread
and every wait is bounded, so stopping the server never waits long.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Self

from crumb import cbor
from crumb.issuer.protocol import parse_cbor_request
from crumb.wire import (
    ERR_CODE,
    ERR_DESCRIPTION,
    ERR_ERROR,
    ERR_RETRY_AFTER,
    RESP_ACCESS_TOKEN,
    RESP_EXPIRES_IN,
    RESP_TIME,
    RESP_TOKEN_TYPE,
    RESP_TOKENS,
    TOKEN_TYPE_BEARER,
)

ISSUER_TIME = 1_800_000_000


def token_response(body: bytes, time: int = ISSUER_TIME) -> bytes:
    """A well-formed answer to a device request: n opaque tokens, as the issuer encodes them."""
    req = parse_cbor_request(body)
    n = req.n_tokens
    items = [[b"chunked-token-%d" % i, 60, 1] for i in range(n)]
    if not req.batch:
        return cbor.dumps({RESP_ACCESS_TOKEN: items[0][0], RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER,
                           RESP_TIME: time})
    return cbor.dumps({RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER, RESP_TIME: time, RESP_TOKENS: items})


def _refusal(code: str, retry_after: int | None = None) -> bytes:
    m = {ERR_ERROR: 1, ERR_DESCRIPTION: f"scripted {code}", RESP_TIME: ISSUER_TIME, ERR_CODE: code}
    if retry_after is not None:
        m[ERR_RETRY_AFTER] = retry_after
    return cbor.dumps(m)


def _response(status: str, body: bytes, ctype: str = "application/ace+cbor", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + body


class BadIssuer:
    BEHAVIOURS = ("silent", "stall_head", "stall_body", "drip", "garbage", "not_cbor", "trunc_body",
                  "trunc_head", "reset", "http500", "http503", "http404", "http401", "chunked", "eof_body",
                  "huge_body", "huge_head", "slow_ok", "interim", "spoofed_time")

    def __init__(self, tls=None) -> None:
        self.tls = tls  # an ssl.SSLContext: serve https (each behaviour after the handshake)
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.ls.settimeout(0.1)
        self.port = self.ls.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.seen: list[str] = []
        self.spoofed: set[str] = set()  # client_ids already sent their one spoofed answer
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(2)
        self.ls.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _hold(self, seconds: float = 30) -> None:
        self.stop.wait(seconds)

    def _serve(self, c: socket.socket) -> None:
        c.settimeout(5)
        try:
            if self.tls:
                c = self.tls.wrap_socket(c, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, body = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(body) < length:
                chunk = c.recv(4096)
                if not chunk:
                    return
                body += chunk
            path = lines[0].split(" ")[1]
            what = path.strip("/").split("/")[0]
            self.seen.append(what)
            getattr(self, "_" + what)(c, body)
        except OSError:
            pass
        finally:
            c.close()

    # -- behaviours ---------------------------------------------------------------

    def _silent(self, c, body):
        self._hold()

    def _stall_head(self, c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/ace+cbor\r\n")
        self._hold()

    def _stall_body(self, c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\n\r\n" + b"\xa2" * 10)
        self._hold()

    def _drip(self, c, body):
        # Never finishes: a header line of endless bytes, one every 50 ms.
        c.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while not self.stop.is_set():
            c.sendall(b"a")
            time.sleep(0.05)

    def _garbage(self, c, body):
        c.sendall(random.Random(7).randbytes(300))

    def _not_cbor(self, c, body):
        c.sendall(_response("200 OK", b"<html><body>captive portal</body></html>", "text/html"))

    def _trunc_body(self, c, body):
        full = _response("200 OK", token_response(body))
        c.sendall(full[:-20])

    def _trunc_head(self, c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")

    def _reset(self, c, body):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _http500(self, c, body):
        c.sendall(_response("500 Internal Server Error", b"<h1>oops</h1>", "text/html"))

    def _http503(self, c, body):
        c.sendall(_response("503 Service Unavailable", _refusal("store_unavailable", 2), extra="Retry-After: 2\r\n"))

    def _http404(self, c, body):
        c.sendall(_response("404 Not Found", b'{"error": "no such endpoint", "status": 404}', "application/json"))

    def _http401(self, c, body):
        c.sendall(_response("401 Unauthorized", _refusal("bad_mac")))

    def _chunked(self, c, body):
        data = token_response(body)
        out = b"HTTP/1.1 200 OK\r\nContent-Type: application/ace+cbor\r\nTransfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(data), 7):
            piece = data[i:i + 7]
            out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
        c.sendall(out + b"0\r\nX-Trailer: yes\r\n\r\n")

    def _eof_body(self, c, body):
        # HTTP/1.0 style: no length, the body ends when the connection does.
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/ace+cbor\r\n\r\n" + token_response(body))

    def _huge_body(self, c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
        try:
            for _ in range(100):
                c.sendall(b"\x00" * 65536)
        except OSError:
            pass

    def _huge_head(self, c, body):
        c.sendall(b"HTTP/1.1 200 OK\r\n")
        try:
            for i in range(5000):
                c.sendall(b"X-Filler-%d: %s\r\n" % (i, b"v" * 40))
        except OSError:
            pass

    def _slow_ok(self, c, body):
        time.sleep(0.3)
        c.sendall(_response("200 OK", token_response(body)))

    def _interim(self, c, body):
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + _response("200 OK", token_response(body)))

    def _spoofed_time(self, c, body):
        # A network attacker's one answer: a well-formed token response whose
        # time is 2**64 - 1, to each client_id's first request; then the real answers.
        client_id = parse_cbor_request(body).client_id
        first = client_id not in self.spoofed
        self.spoofed.add(client_id)
        c.sendall(_response("200 OK", token_response(body, 2**64 - 1 if first else ISSUER_TIME)))
