"""Issue 16, defect 6: bounds on request heads and on slow clients, over real sockets, against `crumb issuer serve`.

Before: one 8 MiB header was read whole and the request still earned a
token, and four connections sending their heads a byte at a time stayed
open for as long as they liked. Waits here are bounded by generous
multiples of the configured timeouts; nothing measures speed.
"""

from __future__ import annotations

import select
import shutil
import socket
import time

import httpx
import pytest

from crumb.issuer.protocol import build_request, parse_response

from .conftest import Fleet, start_issuer

TIMEOUT = 1.0  # the slow issuer's header and body timeouts, seconds
# A slow client is cut off within this: the timeout, with room for a loaded machine (the server's timer
# cannot fire early, and a server without the bound keeps them open for as long as the test waits).
BOUND = 10 * TIMEOUT


@pytest.fixture(scope="module")
def issuers(tmp_path_factory):
    """The issuer with its default limits, and one with short timeouts and smaller limits."""
    tmp = tmp_path_factory.mktemp("limits")
    default, _ = start_issuer(tmp / "default")
    slow, _ = start_issuer(tmp / "slow", args=("--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT),
                                               "--max-header-bytes", "2048", "--max-headers", "16"))
    yield Fleet(default.data, default.url), Fleet(slow.data, slow.url)
    default.close()
    slow.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _port(fleet: Fleet) -> int:
    return int(fleet.url.rsplit(":", 1)[1])


def _head(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /token HTTP/1.1\r\nHost: issuer\r\ncontent-type: application/ace+cbor\r\n"
            b"content-length: %d\r\n%s\r\n" % (len(body), extra))


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` (the server may hang up before it has all of it) and read until it closes.

    What came back, with b"<reset>" appended if the connection was reset.
    """
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(data)
        except OSError:  # the server stopped reading: what it said, if anything, is below
            pass
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            out += b"<reset>"
    return out


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response with a content-length from a keep-alive connection: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, data
        body += chunk
    return head, body


def tokens_issued(fleet: Fleet) -> float:
    for line in httpx.get(f"{fleet.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("crumb_issuer_tokens_issued_total "):
            return float(line.split()[1])
    raise AssertionError("no crumb_issuer_tokens_issued_total in /metrics")


def test_an_oversized_head_earns_no_token(issuers):
    default, _ = issuers
    key = default.enroll("dev-big", "sensors").key
    port = _port(default)
    before = tokens_issued(default)
    # The case: one 8 MiB header on a valid request. 431, or a reset once the server stops
    # reading (the client is still sending): never a token.
    body = build_request("dev-big", key, [("/sensors/t", "read")])
    answer = exchange(port, _head(body, b"x-big: " + b"a" * (8 << 20) + b"\r\n") + body)
    assert answer in (b"<reset>", b"") or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # Just over the default 8 KiB: the whole request is in before the refusal, so the answer is read.
    body = build_request("dev-big", key, [("/sensors/t", "read")])
    answer = exchange(port, _head(body, b"x-big: " + b"a" * 9000 + b"\r\n") + body)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"connection: close" in answer and b"8192 bytes" in answer
    # More header lines than the default 64, each small.
    body = build_request("dev-big", key, [("/sensors/t", "read")])
    answer = exchange(port, _head(body, b"".join(b"x-h%d: 1\r\n" % i for i in range(65))) + body)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"more than 64 header lines" in answer
    assert tokens_issued(default) == before
    # Under the limits, the same requests earn their tokens.
    for extra in (b"x-big: " + b"a" * 7000 + b"\r\n", b"".join(b"x-h%d: 1\r\n" % i for i in range(60))):
        body = build_request("dev-big", key, [("/sensors/t", "read")])
        answer = exchange(port, _head(body, extra + b"connection: close\r\n") + body)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert parse_response(answer.partition(b"\r\n\r\n")[2]).ok
    assert tokens_issued(default) == before + 2


def test_a_pipelined_head_is_measured_too(issuers):
    """A small request and, in the same segment, a second whose head is over the limit: the bytes counted
    for the second start where the first ended, inside one read, so its head is measured from its parts."""
    _, slow = issuers  # --max-header-bytes 2048
    key = slow.enroll("dev-pipe", "sensors").key
    before = tokens_issued(slow)
    body = build_request("dev-pipe", key, [("/sensors/t", "read")])
    first = b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n"
    answer = exchange(_port(slow), first + _head(body, b"x-big: " + b"a" * 2100 + b"\r\n") + body)
    assert answer.count(b"HTTP/1.1 200 ") <= 1, answer[:400]  # the healthz answer at most, never a token
    assert tokens_issued(slow) == before
    # the same request alone, under the limit, earns its token
    body = build_request("dev-pipe", key, [("/sensors/t", "read")])
    answer = exchange(_port(slow), first + _head(body, b"x-big: " + b"a" * 1500 + b"\r\nconnection: close\r\n")
                      + body)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:400]
    assert tokens_issued(slow) == before + 1


def test_the_limits_are_configurable(issuers):
    _, slow = issuers  # --max-header-bytes 2048 --max-headers 16
    port = _port(slow)
    assert exchange(port, b"GET /healthz HTTP/1.1\r\nx-a: " + b"a" * 2100 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"x-h%d: 1\r\n" % i for i in range(17))
    assert exchange(port, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    ok = exchange(port, b"GET /healthz HTTP/1.1\r\nx-a: " + b"a" * 1800 + b"\r\nconnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:200]


def _dribble(port: int, first: bytes, then: bytes | None) -> tuple[socket.socket, bytes | None]:
    """A connection that has sent ``first`` and will send ``then`` every 0.1 s (None: nothing more)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if first:
        s.sendall(first)
    s.setblocking(False)
    return s, then


def test_slow_clients_are_cut_off(issuers):
    """Four slowloris connections (the issue's), one that sends nothing, and one whose body dribbles:
    each is closed within the bound (the timeout, plus slack for a loaded machine), with a 408 or nothing, and none earns a token."""
    _, slow = issuers
    port = _port(slow)
    key = slow.enroll("dev-slow", "sensors").key
    before = tokens_issued(slow)
    body = build_request("dev-slow", key, [("/sensors/t", "read")])
    clients = [_dribble(port, b"POST /token HTTP/1.1\r\nHost: issuer\r\nx-slow: ", b"a") for _ in range(4)]
    clients.append(_dribble(port, b"", None))                    # connects, sends nothing
    clients.append(_dribble(port, _head(body), b"\x00"))         # the head, then its body a byte at a time
    start = time.monotonic()
    closed: dict[int, tuple[float, bytes]] = {}
    deadline = start + BOUND + 30  # only a server that never closes them takes this long: then the assert says so
    next_send = start
    while len(closed) < len(clients) and time.monotonic() < deadline:
        open_ = [s for i, (s, _) in enumerate(clients) if i not in closed]
        readable, _, _ = select.select(open_, [], [], 0.05)
        for i, (s, _) in enumerate(clients):
            if s in readable:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                got = closed.get(i, (0.0, b""))[1] + data
                if not data or b"\r\n\r\n" in got:  # an answer (the server closes after it) or the close
                    closed[i] = (time.monotonic() - start, got)
        if time.monotonic() >= next_send:
            next_send += 0.1
            for i, (s, then) in enumerate(clients):
                if i not in closed and then:
                    try:
                        s.send(then)
                    except OSError:
                        pass
    for s, _ in clients:
        s.close()
    assert len(closed) == len(clients), f"still open after {time.monotonic() - start:.1f} s: " \
                                        f"{[i for i in range(len(clients)) if i not in closed]}"
    for i, (after, answer) in closed.items():
        assert after <= BOUND, (i, after)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (i, answer[:200])
    assert b"body was not complete" in closed[5][1] and b"head was not complete" in closed[0][1]
    assert tokens_issued(slow) == before


def test_blank_lines_do_not_hold_a_connection(issuers):
    """HTTP allows blank lines before a request, and any bytes stop uvicorn's keep-alive timer: a client
    that sends CRLFs and never a request, from the start or after an answer, is cut off like a slowloris."""
    _, slow = issuers
    port = _port(slow)
    fresh = socket.create_connection(("127.0.0.1", port), timeout=30)  # blank lines from the start, 10 a second
    answered = socket.create_connection(("127.0.0.1", port), timeout=30)  # one request, then one blank line
    answered.sendall(b"GET /healthz HTTP/1.1\r\nHost: issuer\r\n\r\n")
    head, _ = read_response(answered)
    assert head.startswith(b"HTTP/1.1 200 "), head
    answered.sendall(b"\r\n")
    start = time.monotonic()
    clients = {0: fresh, 1: answered}
    closed: dict[int, float] = {}
    next_send = start
    while len(closed) < 2 and time.monotonic() < start + BOUND + 30:
        readable, _, _ = select.select([s for i, s in clients.items() if i not in closed], [], [], 0.05)
        for i, s in clients.items():
            if s in readable:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data or b"\r\n\r\n" in data:  # the close, or the 408 before it
                    assert not data or data.startswith(b"HTTP/1.1 408 "), data[:200]
                    closed[i] = time.monotonic() - start
        if time.monotonic() >= next_send and 0 not in closed:
            next_send += 0.1
            try:
                fresh.send(b"\r\n")
            except OSError:
                pass
    for s in clients.values():
        s.close()
    assert sorted(closed) == [0, 1], f"still open after {time.monotonic() - start:.1f} s: {closed}"
    assert max(closed.values()) <= BOUND, closed


def test_keep_alive_outlives_the_head_timeout_and_requests_still_flow(issuers):
    """The head timer runs only while a request is arriving: an idle keep-alive connection longer than it
    is still served, and ordinary requests are unaffected."""
    _, slow = issuers
    c = slow.client("dev-keep")
    with socket.create_connection(("127.0.0.1", _port(slow)), timeout=30) as s:
        for _ in range(2):
            body = build_request("dev-keep", c.creds.key, [("/sensors/t", "read")])
            s.sendall(_head(body) + body)
            head, answer = read_response(s)
            assert head.startswith(b"HTTP/1.1 200 ") and parse_response(answer).ok
            time.sleep(TIMEOUT * 1.5)
    assert c.request([("/sensors/t", "read")]).ok
