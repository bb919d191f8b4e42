"""The VM's `socket` bridge (tools/mpy/vmlib/socket.py -> netbridge.mjs -> Node net).

Servers are started here, in Python, on free loopback ports; the code under
test runs inside MicroPython and talks to them through the bridge.
"""

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crumb.tooling.localservices import RefusingPort

BODY = bytes(range(256)) * 400  # 100 KiB, every byte value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        got = self.rfile.read(n)
        out = hashlib.sha256(got).hexdigest().encode() + b"\n" + BODY
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent_server():
    """Accepts connections, reads, never answers (until the test ends)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    conns, stop = [], threading.Event()

    def loop():
        ls.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
                conns.append(c)
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield ls.getsockname()[1]
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    ls.close()


HTTP_CLIENT = r"""
import socket, sys, hashlib, binascii
port = int(sys.argv[1])
req_body = bytes(range(256)) * 8 + b"\x00end"
addr = socket.getaddrinfo("localhost", port)[0][-1]
assert addr == ("127.0.0.1", port), addr
s = socket.socket()
s.settimeout(5)
s.connect(addr)
s.write(b"POST /x HTTP/1.0\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(req_body))
s.write(req_body)
status = s.readline()
assert status.startswith(b"HTTP/1.0 200"), status
rest = s.read()
s.close()
head, body = rest.split(b"\r\n\r\n", 1)
digest, payload = body.split(b"\n", 1)
assert digest == binascii.hexlify(hashlib.sha256(req_body).digest()), digest
assert payload == bytes(range(256)) * 400, len(payload)
print("OK", len(payload))
"""


def test_http_roundtrip_through_bridge(vm, http_server):
    r = vm.run_vm(HTTP_CLIENT, args=[http_server], timeout=60).check()
    assert r.out.strip() == f"OK {len(BODY)}"


def test_recv_timeout_is_an_oserror_not_a_hang(vm, silent_server, http_server):
    code = r"""
import socket, sys, time
s = socket.socket()
s.settimeout(0.5)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send(b"hello?")
t0 = time.ticks_ms()
try:
    s.recv(10)
    raise SystemExit("recv returned")
except OSError as e:
    dt = time.ticks_diff(time.ticks_ms(), t0)
    print("timeout", e.errno, dt)
s.close()
# the bridge is still usable afterwards
s = socket.socket()
s.settimeout(5)
s.connect(("127.0.0.1", int(sys.argv[2])))
s.write(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
print(s.readline())
s.close()
"""
    # Not a hang: the run ends before run_vm's own timeout. When after 0.5 s is the
    # machine's business; that it is not before is not.
    r = vm.run_vm(code, args=[silent_server, http_server], timeout=60).check()
    lines = r.out.splitlines()
    word, errno, dt = lines[0].split()
    assert (word, errno) == ("timeout", "110")
    assert int(dt) >= 400, dt
    assert lines[1].startswith("b'HTTP/1.0 200")


def test_blocking_socket_is_capped_by_bridge_max_timeout(vm, silent_server):
    code = r"""
import socket, sys, time
s = socket.socket()          # no settimeout: "blocking"
s.connect(("127.0.0.1", int(sys.argv[1])))
t0 = time.ticks_ms()
try:
    s.recv(1)
except OSError as e:
    print(e.errno, time.ticks_diff(time.ticks_ms(), t0))
"""
    # Capped, not blocked for good: the read ends before run_vm's own timeout, and not before the cap.
    r = vm.run_vm(code, args=[silent_server], net_max_timeout=1, timeout=60).check()
    errno, dt = r.out.split()
    assert errno == "110" and int(dt) >= 900, r.out


def test_connection_errors(vm, silent_server):
    code = r"""
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("connected?!")
except OSError as e:
    print("refused", e.errno)
s = socket.socket()
s.setblocking(False)
s.connect(("127.0.0.1", int(sys.argv[2])))
try:
    s.recv(1)
except OSError as e:
    print("nonblocking", e.errno)
s.close()
try:
    s.recv(1)
except OSError as e:
    print("closed", e.errno)
try:
    socket.getaddrinfo("no-such-host.invalid", 80)
except OSError as e:
    print("dns", e.errno)
"""
    with RefusingPort() as down:  # refuses connections, and nothing else can listen there meanwhile
        r = vm.run_vm(code, args=[down.port, silent_server], timeout=30).check()
    lines = r.out.split("\n")
    assert lines[:3] == ["refused 111", "nonblocking 11", "closed 107"], r.out
    # name not found (-2), or a resolver that times out on an offline machine
    assert lines[3] in ("dns -2", "dns 110"), r.out


def test_peer_close_gives_eof(vm):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def serve():
        c, _ = ls.accept()
        c.sendall(b"bye")
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    code = r"""
import socket, sys
s = socket.socket()
s.settimeout(5)
s.connect(("127.0.0.1", int(sys.argv[1])))
print(s.read(), s.recv(10), s.recv(10))
"""
    try:
        r = vm.run_vm(code, args=[ls.getsockname()[1]], timeout=30).check()
    finally:
        t.join(5)
        ls.close()
    assert r.out.strip() == "b'bye' b'' b''"


def test_udp_as_lwip_does_it(vm):
    # A SOCK_DGRAM socket behaves as modlwip.c's (v1.22-1.24): sendto/recvfrom with (ip, port)
    # addresses; a datagram cut to the length asked; one datagram held at a time (a second one
    # arriving before the first is read is dropped); once connected, other senders' datagrams are
    # dropped; a timeout under 100 ms does not wait, and a wait ends in ETIMEDOUT (110).
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                d, addr = srv.recvfrom(2048)
            except OSError:
                continue
            if d == b"two":  # two datagrams back to back: the second finds the slot taken
                srv.sendto(b"first", addr)
                srv.sendto(b"second", addr)
            elif d == b"stranger":  # from another port first, then from the server
                other.sendto(b"from elsewhere", addr)
                srv.sendto(b"from the server", addr)
            else:
                srv.sendto(d.upper(), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    code = r"""
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"hello", ("127.0.0.1", port))
d, addr = s.recvfrom(3)
print("cut", d, addr[0], addr[1] == port)
s.sendto(b"two", ("127.0.0.1", port))
time.sleep(0.3)
print("one", s.recv(100))
s.settimeout(0.05)
try:
    s.recv(100)
except OSError as e:
    print("then", e.errno)
s.settimeout(2)
s.connect(("127.0.0.1", port))
s.send(b"stranger")
print("connected", s.recv(100))
s.close()
"""
    try:
        r = vm.run_vm(code, args=[srv.getsockname()[1]], timeout=60).check()
    finally:
        stop.set()
        t.join(2)
        srv.close()
        other.close()
    assert r.out.split("\n")[:4] == ["cut b'HEL' 127.0.0.1 True", "one b'first'", "then 110",
                                     "connected b'from the server'"], r.out
