"""`crumb bench device`: what the device client costs, measured on the real thing.

Everything runs here, on loopback: the real issuer (``crumb issuer serve``
in a child process), a service that verifies every call with
``crumb.Verifier`` (keys fetched from the issuer's ``GET /keys``), a TCP relay
that counts the bytes on the wire, and the device code ``ucrumb`` inside the
MicroPython WebAssembly VM (tools/mpy), talking to them through its socket
bridge.

Figures (``run()`` returns them as a dict, ``--json`` prints it):

mpy_bytes
    Sum of the ``.mpy`` files of ``device/`` compiled by mpy-cross, but the
    optional modules a board ships only when its file asks
    (crumb.tooling.firmware.bundle.FEATURE_MODULES): those are
    ``mpy_optional`` ({file: bytes}).
coap_heap_bytes, coap_response_bytes
    The same heap measure as heap_peak_bytes for one ``Client.header()``
    that fetches a batch of 4 over CoAP (ucrumb.coap, a coap:// issuer):
    the UDP socket answers each request with the issuer's CoAP answer
    recorded a moment before (its message id and token set to the
    request's, in a buffer made beforehand), allocating the datagram it
    returns, as a native recv() does. coap_response_bytes: that answer's
    payload.
request_bytes, response_bytes
    The CBOR bodies of one single-token exchange (batch 1) for the typical
    scope: 8-character device id, 15-character resource, one operation.
http_bytes
    Everything on the wire for that exchange, both directions, headers
    included (counted by the relay).
import_heap_bytes
    MicroPython heap allocated by ``import ucrumb.client`` from the .mpy files
    (the code loaded into RAM; frozen modules keep most of it in flash).
heap_peak_bytes
    MicroPython heap allocated by one ``Client.header()`` call that has to
    fetch (a token request with the default batch, then the attach), inside
    the VM: ``gc.collect(); gc.disable()`` and the ``gc.mem_alloc()``
    difference across the call (the VM cannot collect mid-run, see
    docs/micropython-vm.md), so it counts every byte allocated, garbage
    included: an upper bound of the peak. The socket during that call replays
    the issuer's response recorded on the wire a moment before and allocates
    what a native socket allocates for it (the bytes it returns), because the
    VM's bridge socket moves data as hex strings and would count its own
    traffic many times over. ``heap_peak_bytes_batch1`` is the same with
    ``batch=1``.
round_trips_per_call
    Issuer exchanges per authorized call over 100 calls made with
    ``Client.request()`` with the default settings (batch 4, single-use
    tokens), boot included: the first request carries no time and is
    refused with ``stale_time`` once. Every call must be accepted by the
    verifying service.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from ...extras import require

if TYPE_CHECKING:
    from ...issuer.datadir import DataDir

GOALS = {"mpy_bytes": 16384, "heap_peak_bytes": 8192, "request_plus_response_bytes": 230,
         "round_trips_per_call": 0.34, "pop_heap_peak_bytes": 10240}

DEVICE_ID = "dev-0001"          # 8 characters, like the typical token of PROTOCOL.md §9
RESOURCE = "/sensors/temp01"    # 15 characters
OPERATION = "read"
CALLS = 100

BENCH_POLICY = """\
[defaults]
ttl = 60
uses = 1
batch = 8
rate = 1000.0
burst = 1000

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read", "publish"]

[[groups.sensors.allow]]
resource = "/config/*"
operations = ["read"]
uses = 3
"""


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "device" / "ucrumb").is_dir() and (parent / "tools" / "mpy").is_dir():
            return parent
    raise RuntimeError("crumb bench device needs a source checkout (device/ and tools/mpy/ next to host/)")


def mpyvm():
    """tools/mpy/mpyvm.py (the MicroPython VM runner), imported from the checkout."""
    path = str(repo_root() / "tools" / "mpy")
    if path not in sys.path:
        sys.path.insert(0, path)
    import mpyvm as m

    return m


# -- real peers on loopback ----------------------------------------------------------


def enroll_data_dir(data_dir: str | Path, policy: str,
                    devices: dict[str, str | None]) -> tuple[DataDir, Callable[[str], dict[str, dict]]]:
    """Create the data dir with ``policy`` as its policy and ``devices`` (id -> group) enrolled.

    Returns (DataDir, a function from issuer URL to each device's credentials,
    as `crumb device add` prints them).
    """
    from ...issuer.datadir import DataDir
    from ...issuer.keystore import load_or_create_master
    from ...issuer.protocol import derive_device_key
    from ...issuer.registry import Registry

    data = DataDir(data_dir).create()
    data.policy.write_text(policy)
    registry = Registry(data.registry)
    try:
        for dev, group in devices.items():
            registry.add(dev, group)
    finally:
        registry.close()
    master = load_or_create_master(data.root)

    def credentials(url: str) -> dict[str, dict]:
        return {dev: {"device_id": dev, "key": derive_device_key(master, dev).hex(), "issuer": url}
                for dev in devices}

    return data, credentials


class EnrolledIssuer:
    """What every issuer fixture starts from: a data dir (``data_dir``, or a temporary
    one) with ``policy`` and the ``devices`` (device id -> policy group) enrolled.
    ``creds[id]`` is what ``crumb device add`` would print for each."""

    def __init__(self, policy: str = BENCH_POLICY, devices: dict[str, str | None] | None = None,
                 data_dir: str | Path | None = None) -> None:
        self.policy = policy
        self.devices = {DEVICE_ID: "sensors"} if devices is None else devices
        self.data_dir = data_dir
        self.creds: dict[str, dict] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None

    def _enroll(self) -> tuple[DataDir, Callable[[str], dict[str, dict]]]:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="crumb-issuer-")
            self.data_dir = self._tmp.name
        return enroll_data_dir(self.data_dir, self.policy, self.devices)


class DeviceIssuer(EnrolledIssuer):
    """The real issuer, `crumb issuer serve` in a child process on a free loopback port
    (crumb.tooling.localissuer.LocalIssuer), with a policy and enrolled devices in a data dir."""

    args: tuple[str, ...] = ()  # more `crumb issuer serve` arguments (CoapDeviceIssuer: --coap)

    def __enter__(self) -> Self:
        from ..localissuer import LocalIssuer

        data, credentials = self._enroll()
        self.policy_path = data.policy
        # on any free port: known once started
        self.local = LocalIssuer(data.root, self.policy_path, args=self.args)
        try:
            self.local.start()
        except Exception:
            self._cleanup()
            raise
        self.url, self.port = self.local.url, self.local.port
        self.creds.update(credentials(self.url))
        return self

    def _cleanup(self) -> None:
        self.local.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __exit__(self, *exc) -> None:
        self._cleanup()


class VerifyingService:
    """An HTTP service that verifies every call with crumb.Verifier before answering.

    Resource = the request path, operation = read (GET) / publish (POST) /
    write (PUT). 200 with ``{"sub": ...}`` when the token is good, 401/403
    with ``{"code": ...}`` otherwise. Counts ``accepted`` and ``rejected``.
    ``POST /envelope/<resource>`` takes an MQTT envelope as the body and
    verifies its token for (resource, publish), as an MQTT consumer does.
    ``pop_key``: the service's node key, for proof-of-possession tokens whose
    first hop it is (a ``Crumb-PoP`` header, or the envelope's proof).
    """

    OPERATIONS: ClassVar[dict[str, str]] = {"GET": "read", "POST": "publish", "PUT": "write"}

    def __init__(self, issuer_url: str, clock=time.time, tls=None, issuer_ca: str | None = None,
                 pop_key=None) -> None:
        # tls: an ssl.SSLContext to serve https; issuer_ca: the PEM CA to
        # check an https issuer against when fetching its keys.
        import ssl

        import httpx

        from ...replay import MemoryReplayStore
        from ...services.keyfetch import FetchedKeys
        from ...verify import Verifier

        client = httpx.Client(timeout=2.0, follow_redirects=False,
                              verify=ssl.create_default_context(cadata=issuer_ca) if issuer_ca else True)
        # A service started for this run, with no earlier life to fence off: tokens minted right after it pass.
        self.verifier = Verifier([], resolver=FetchedKeys(issuer_url.rstrip("/") + "/keys", min_interval=0.0,
                                                          client=client), clock=clock,
                                 replay=MemoryReplayStore(fence=False, clock=clock), pop_key=pop_key)
        self.tls = tls
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, auth: str | None, body: bytes,
               proof: str | None = None) -> tuple[int, dict]:
        from ...errors import CrumbError
        from ...pop import PopRequest
        from ...services import envelope
        from ...services.middleware.guard import pop_request
        from ...services.middleware.rules import RequestInfo

        try:
            if path.startswith("/envelope/"):  # an MQTT envelope [token, payload, ?proof], posted as the body
                token, body, env_proof = envelope.unpack_proof(body)
                path = path[len("/envelope"):]
                pop = PopRequest(env_proof, "PUBLISH", path, body) if env_proof is not None else None
                verified = self.verifier.verify(token, path, "publish", pop=pop)
            elif not auth or not auth.startswith("Bearer "):
                return 401, {"code": "no_token"}
            else:
                target, _, query = path.partition("?")
                pop = pop_request(RequestInfo(method, target, query), [proof] if proof else [], body)
                verified = self.verifier.verify(auth[7:].strip(), path, self.OPERATIONS.get(method, method.lower()),
                                                pop=pop)
        except CrumbError as e:
            with self._lock:
                self.rejected[e.code] = self.rejected.get(e.code, 0) + 1
            return (403 if e.code == "scope_denied" else 401), {"code": e.code, "message": str(e)}
        with self._lock:
            self.accepted += 1
            self.bodies.append(body)
        return 200, {"sub": verified.claims.sub, "resource": path, "body": body.decode("latin-1")}

    def __enter__(self) -> Self:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                status, doc = service.handle(self.command, self.path, self.headers.get("Authorization"), body,
                                             self.headers.get("Crumb-PoP"))
                out = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # a client that hangs up or fails the TLS handshake: nothing to report

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if self.tls:  # the handshake happens in the handler's thread, on its first read
            self.httpd.socket = self.tls.wrap_socket(self.httpd.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Relay:
    """A TCP relay to ``target`` that records every connection's bytes, both ways."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.conns: list[list[bytearray]] = []  # [sent by client, sent by server]
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                continue
            record = [bytearray(), bytearray()]
            with self._lock:
                self.conns.append(record)
            threading.Thread(target=self._serve, args=(c, record), daemon=True).start()

    def _serve(self, c: socket.socket, record: list[bytearray]) -> None:
        try:
            u = socket.create_connection(self.target, timeout=10)
        except OSError:
            c.close()
            return
        c.settimeout(10)

        def pump(src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
            try:
                while data := src.recv(65536):
                    with self._lock:
                        buf += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(u, c, record[1]), daemon=True)
        t.start()
        pump(c, u, record[0])
        t.join(10)
        c.close()
        u.close()

    def exchanges(self) -> list[tuple[bytes, bytes]]:
        with self._lock:
            return [(bytes(a), bytes(b)) for a, b in self.conns]

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(2)
        self.ls.close()


def split_http(message: bytes) -> tuple[bytes, bytes]:
    """(head, body) of one recorded HTTP message."""
    i = message.index(b"\r\n\r\n") + 4
    return message[:i], message[i:]


# -- what runs inside the VM -----------------------------------------------------------

_VM_WIRE = """
import sys
from binascii import unhexlify
from ucrumb import client, cbor
dev, key, relay, issuer, service, res, op, calls = sys.argv[1:9]
key = unhexlify(key)
calls = int(calls)

# one single-token exchange through the counting relay, after a sync with the issuer
c1 = client.Client(issuer, dev, key, batch=1)
c1.token("/sensors/warm", op)
c1.url = relay + "/token"
c1.header(res, op)
# one exchange with the default settings (batch 4): its response is replayed for the heap figure
c4 = client.Client(issuer, dev, key)
c4.token("/sensors/warm", op)
c4.url = relay + "/token"
c4.header(res, op)

# round trips: a fresh client, default settings, `calls` authorized calls to the verifying service
c = client.Client(issuer, dev, key)
ok = 0
for i in range(calls):
    status, hdrs, body = c.request("POST", service + res, res, "publish", b"21.5")
    ok += status == 200
print("@@CALLS", calls, ok, c.round_trips)
"""

_VM_REPLAY_SOCKET = '''
# A socket that answers with recorded responses; it allocates only the
# bytes it returns, as a native socket's recv() does.
import socket as _socket

responses = []


class ReplaySocket:
    def __init__(self, af=2, type=1, proto=0):
        self.b = responses.pop(0)
        self.p = 0

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def send(self, data):
        return len(data)

    def recv(self, n):
        e = min(len(self.b), self.p + n)
        r = self.b[self.p:e]
        self.p = e
        return r

    def close(self):
        pass


_socket.socket = ReplaySocket
'''

_VM_HEAP = """
import gc, sys
from binascii import unhexlify
import crumb_replay
from ucrumb import client
dev, key, res, op = sys.argv[1:5]
key = unhexlify(key)
answers = {4: unhexlify(sys.argv[5]), 1: unhexlify(sys.argv[6])}


def measure(batch):
    c = client.Client("http://127.0.0.1:9/", dev, key, batch=batch)
    crumb_replay.responses[:] = [answers[batch]] * 2
    c.header("/sensors/warm", op)  # syncs; one-time allocations (first calls, the address) not counted
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    c.header(res, op)
    b = gc.mem_alloc()
    gc.enable()
    assert c.round_trips == 2 and not crumb_replay.responses
    return b - a


for batch in (4, 1):
    print("@@HEAP", batch, measure(batch))
"""


# Proof of possession (PROTOCOL.md §11.9, §12.1): the same device with a `pop` rule and a service
# that is the tokens' first hop. _VM_POP_LIVE records, through the issuer relay, a plain answer (for
# the warm-up) and the encrypted answer to a fetch of 4 PoP tokens whose request nonce is fixed;
# it times ucrumb.pop.proof (the per-call cost) and makes one authorized call through the service
# relay. _VM_POP_HEAP replays the two answers to a client that sends the same request again (same
# nonce, same device time: an encrypted answer opens only for its own request) and counts the heap
# of that fetch (AES-CCM on the pure-Python AES: the VM has no cryptolib) plus one proof.
_VM_POP_LIVE = """
import sys
from time import ticks_ms, ticks_diff
from binascii import unhexlify
from ucrumb import client
dev, key, issuer, irelay, srelay, res, nonce, batch = sys.argv[1:9]
c = client.Client(issuer, dev, unhexlify(key), batch=int(batch))
c.header("/config/warm", "read")  # clock sync
c.url = irelay + "/token"
c.header("/config/warm2", "read")  # recorded: the replayed warm-up answer
real = client.urandom
client.urandom = lambda n: unhexlify(nonce)[:n]
t = c._take(res, "publish")  # recorded: `batch` PoP tokens, encrypted to this request
client.urandom = real
from ucrumb import pop
n = 200
t0 = ticks_ms()
for i in range(n):
    pop.proof(t[3], t[0], c.now(), "POST", res, b"21.5")
print("@@POPMAC", ticks_diff(ticks_ms(), t0), n)
st, h, body = c.request("POST", srelay + res, res, "publish", b"21.5")
print("@@POPCALL", st)
"""

_VM_POP_HEAP = """
import gc, sys
from time import ticks_ms
from binascii import unhexlify
import crumb_replay
from ucrumb import client
dev, key, res, nonce, when, warm, answer, batch = sys.argv[1:9]
c = client.Client("http://127.0.0.1:9/", dev, unhexlify(key), batch=int(batch))
crumb_replay.responses[:] = [unhexlify(warm), unhexlify(answer)]
c.header("/config/warm", "read")  # one-time allocations (first calls, the address) not counted
from ucrumb import pop, aesccm  # imported on the first PoP answer: not counted either
client.urandom = lambda n: unhexlify(nonce)[:n]
c._t0, c._at = int(when), ticks_ms()  # the recorded request's device time
gc.collect()
gc.disable()
a = gc.mem_alloc()
t = c._take(res, "publish")
p = pop.proof(t[3], t[0], c.now(), "POST", res, b"21.5")
b = gc.mem_alloc()
gc.enable()
assert c.round_trips == 2 and not crumb_replay.responses and len(t) == 4
print("@@POPHEAP", b - a)
"""

POP_HOP = bytes(range(100, 132))  # the bench service's node key seed: the PoP tokens' first hop


def pop_policy() -> str:
    """BENCH_POLICY with proof of possession on the sensors rule (pop = "batch", first hop "ingest")."""
    from ...keys import SigningKey, b64u
    hop = SigningKey(POP_HOP)
    policy = BENCH_POLICY.replace('operations = ["read", "publish"]\n',
                                  'operations = ["read", "publish"]\npop = "batch"\npop_node = "ingest"\n', 1)
    return policy.replace("[groups.sensors]", f'[nodes]\ningest = "{b64u(hop.public.raw)}"\n\n[groups.sensors]', 1)


def run_pop(vm, say) -> dict:
    """The PoP figures: pop_request_bytes, pop_heap_peak_bytes, pop_mac_ms (and what explains them)."""
    from ...keys import SigningKey
    say("proof of possession: issuer with a pop rule, service as first hop")
    nonce = "a1a2a3a4a5a6"
    heap: dict[int, int] = {}
    for batch in (1, 4):  # 4, the client's default, last: its exchanges are the ones reported
        with DeviceIssuer(pop_policy()) as issuer, \
                VerifyingService(issuer.url, pop_key=SigningKey(POP_HOP)) as service, \
                Relay(issuer.port) as irelay, Relay(service.httpd.server_address[1]) as srelay:
            cred = issuer.creds[DEVICE_ID]
            r = vm.run_vm(_VM_POP_LIVE, args=[DEVICE_ID, cred["key"], issuer.url, irelay.url, srelay.url, RESOURCE,
                                              nonce, batch], timeout=300).check()
            (call, _), = srelay.exchanges()
            # the warm-up and the measured fetch (with batch=1, the call then fetches again)
            (_, warm), (fetch, answer) = irelay.exchanges()[:2]
            if _marks(r.out, "@@POPCALL")[0] != ["200"] or service.accepted != 1:
                raise RuntimeError(f"the PoP call was refused: {service.rejected}\n{r.out}\n{r.err}")
        body = split_http(fetch)[1]
        when = int.from_bytes(body[-27:-23], "big")  # the crumb block: time (4), count (1), nonce (6), MAC (16)
        with tempfile.TemporaryDirectory(prefix="crumb-bench-") as d:
            (Path(d) / "crumb_replay.py").write_text(_VM_REPLAY_SOCKET)
            args = [DEVICE_ID, cred["key"], RESOURCE, nonce, when, warm.hex(), answer.hex(), batch]
            h = vm.run_vm(_VM_POP_HEAP, args=args, paths=[d]).check()
        heap[batch] = int(_marks(h.out, "@@POPHEAP")[0][0])

    head = split_http(call)[0].split(b"\r\n")
    proof = next(line for line in head if line.lower().startswith(b"crumb-pop:"))
    auth = next(line for line in head if line.lower().startswith(b"authorization:"))
    ms, n = (int(x) for x in _marks(r.out, "@@POPMAC")[0])
    return {
        "pop_request_bytes": len(call),
        "pop_request_header_bytes": len(proof) + 2,
        "pop_authorization_header_bytes": len(auth) + 2,
        "pop_token_response_bytes": len(split_http(answer)[1]),
        "pop_heap_peak_bytes": heap[4],
        # The same for a client made with batch=1 (one PoP token per answer): for a device short of RAM.
        "pop_heap_peak_bytes_batch1": heap[1],
        "pop_mac_ms": round(ms / n, 3),
        "pop_method": "pop_request_bytes: one authorized POST (head and its 4-byte body) as the service received "
                      "it; the step measured: one fetch of 4 PoP tokens (the encrypted answer replayed to the same "
                      "request, pure-Python AES-CCM) and one proof, with the default batch (_batch1: batch=1); pop_heap_peak_bytes: gc.mem_alloc() difference "
                      "across the step, automatic GC disabled (everything it allocates, transient copies included: "
                      "an upper bound of its peak, as heap_peak_bytes); pop_mac_ms: 200 ucrumb.pop.proof() calls timed "
                      "together (ticks_ms)",
    }


_VM_COAP_REPLAY = '''
# A UDP socket answering each CoAP request with a recorded answer: a
# piggybacked ACK carrying the request's message id and token, written into a
# buffer made beforehand; recv() allocates only the datagram it returns.
import socket as _socket

answer = bytearray()  # options and payload of the recorded answer, after the header and token
code = 0x41  # 2.01 Created
_buf = bytearray(1400)
_n = [0]


class UdpReplay:
    def __init__(self, af=2, type=2, proto=0):
        pass

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def send(self, d):
        tkl = d[0] & 15
        b = _buf
        b[0] = 0x60 | tkl
        b[1] = code
        b[2] = d[2]
        b[3] = d[3]
        for i in range(tkl):
            b[4 + i] = d[4 + i]
        n = 4 + tkl
        for i in range(len(answer)):
            b[n + i] = answer[i]
        _n[0] = n + len(answer)
        return len(d)

    def recv(self, n):
        return bytes(memoryview(_buf)[:_n[0]])

    def close(self):
        pass


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(2, type, 0, "", (host, port))]


_socket.socket = UdpReplay
_socket.getaddrinfo = getaddrinfo
'''

_VM_COAP_HEAP = """
import gc, sys
from binascii import unhexlify
import crumb_coap_replay as r
from ucrumb import client, coap
dev, key, res, op = sys.argv[1:5]
r.answer[:] = unhexlify(sys.argv[5])
c = client.Client("coap://127.0.0.1:9", dev, unhexlify(key))
c.header("/sensors/warm", op)  # syncs; one-time allocations not counted
gc.collect()
gc.disable()
a = gc.mem_alloc()
c.header(res, op)
b = gc.mem_alloc()
gc.enable()
assert c.round_trips == 2
print("@@COAPHEAP", b - a)
"""


def _coap_answer(issuer: DeviceIssuer, coap_port: int) -> bytes:
    """The options and payload of the issuer's CoAP answer to a batch of 4 (recorded on CPython)."""
    from binascii import unhexlify

    from ucrumb import client, coap

    seen: list[bytes] = []
    real = coap._transact

    def recording(*a):
        m = real(*a)
        seen.append(bytes(coap.encode(0, 0, 0, b"", m[4], m[5]))[4:])
        return m

    coap._transact = recording
    try:
        c = client.Client(f"coap://127.0.0.1:{coap_port}", DEVICE_ID, unhexlify(issuer.creds[DEVICE_ID]["key"]))
        c.token("/sensors/warm", OPERATION)
    finally:
        coap._transact = real
    return seen[-1]


def _marks(out: str, tag: str) -> list[list[str]]:
    return [line.split()[1:] for line in out.splitlines() if line.startswith(tag + " ")]


def run(calls: int = CALLS, progress=None) -> dict:
    say = progress or (lambda m: None)
    vm = mpyvm()
    vm.check_vm()
    say("compiling device/ with mpy-cross")
    from ..firmware.bundle import FEATURE_MODULES

    sizes, total = vm.mpy_sizes()
    names = {Path(m).with_suffix(".mpy").name for ms in FEATURE_MODULES.values() for m in ms}
    optional = {k: v for k, v in sizes.items() if Path(k).name in names}
    result: dict = {"mpy_bytes": total - sum(optional.values()),
                    "mpy_files": {k: v for k, v in sizes.items() if k not in optional}, "mpy_optional": optional}
    pop_names = {Path(m).with_suffix(".mpy").name for m in FEATURE_MODULES["pop"]}
    result["pop_mpy_files"] = {k: v for k, v in optional.items() if Path(k).name in pop_names}
    result["pop_mpy_bytes"] = sum(result["pop_mpy_files"].values())
    # on-device verification's modules (feature "verify") apart too, under their own keys
    verify_names = {Path(m).with_suffix(".mpy").name for m in FEATURE_MODULES["verify"]}
    verify_sizes = {k: v for k, v in optional.items() if Path(k).name in verify_names}
    result.update({"verify_mpy_bytes": sum(verify_sizes.values()), "verify_mpy_files": verify_sizes})

    class CoapIssuer(DeviceIssuer):
        args = ("--coap", "--coap-port", "0")

    with CoapIssuer() as issuer, VerifyingService(issuer.url) as service, Relay(issuer.port) as relay:
        coap_answer = _coap_answer(issuer, issuer.local.coap_port or 0)
        cred = issuer.creds[DEVICE_ID]
        say(f"issuer on {issuer.url}, verifying service on {service.url}; running the device code in MicroPython")
        r = vm.run_vm(_VM_WIRE, args=[DEVICE_ID, cred["key"], relay.url, issuer.url, service.url, RESOURCE,
                                      OPERATION, calls], timeout=300).check()
        exchanges = relay.exchanges()
        if len(exchanges) != 2:
            raise RuntimeError(f"expected 2 exchanges through the relay, saw {len(exchanges)}:\n{r.out}\n{r.err}")
        (req1, resp1), (_req4, resp4) = exchanges
        _head_q, body_q = split_http(req1)
        _head_r, body_r = split_http(resp1)
        if not resp1.startswith(b"HTTP/1.1 200") or not resp4.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the issuer refused the bench device:\n{resp1!r}\n{resp4!r}")
        from ...issuer.protocol import parse_response

        token = parse_response(body_r).tokens[0][0]
        n, ok, trips = (int(x) for x in _marks(r.out, "@@CALLS")[0])
        result.update({
            "request_bytes": len(body_q),
            "response_bytes": len(body_r),
            "request_plus_response_bytes": len(body_q) + len(body_r),
            "token_bytes": len(token),
            "http_bytes": len(req1) + len(resp1),
            "http_request_bytes": len(req1),
            "http_response_bytes": len(resp1),
            "batch_response_bytes": len(split_http(resp4)[1]),
            "calls": n,
            "calls_accepted": ok,
            "service_accepted": service.accepted,
            "service_rejected": dict(service.rejected),
            "issuer_round_trips": trips,
            "round_trips_per_call": round(trips / n, 4),
        })
    say("measuring heap use in MicroPython")
    with tempfile.TemporaryDirectory(prefix="crumb-bench-") as d:
        (Path(d) / "crumb_replay.py").write_text(_VM_REPLAY_SOCKET)
        h = vm.run_vm(_VM_HEAP, args=[DEVICE_ID, cred["key"], RESOURCE, OPERATION, resp4.hex(), resp1.hex()],
                      paths=[d]).check()
        compiled = Path(d) / "mpy"
        vm.compile_tree(vm.DEVICE_DIR, compiled)
        (Path(d) / "crumb_coap_replay.py").write_text(_VM_COAP_REPLAY)
        ch = vm.run_vm(_VM_COAP_HEAP, args=[DEVICE_ID, cred["key"], RESOURCE, OPERATION, coap_answer.hex()],
                       paths=[d]).check()
        import_heap = vm.heap_peak("import ucrumb.client", default_paths=False,
                                   paths=[f"{compiled}:/lib", f"{vm.VMLIB_DIR}:/lib"])
    heap = {int(b): int(v) for b, v in _marks(h.out, "@@HEAP")}
    ver = vm.run_vm("import sys; print('.'.join(str(x) for x in sys.implementation.version[:3]))").check()
    result.update({
        "heap_peak_bytes": heap[4],
        "heap_peak_bytes_batch1": heap[1],
        "coap_heap_bytes": int(_marks(ch.out, "@@COAPHEAP")[0][0]),
        "coap_response_bytes": len(coap_answer) - coap_answer.index(b"\xff") - 1,
        "import_heap_bytes": import_heap,
        "heap_method": "gc.mem_alloc() difference across one Client.header() that fetches (default batch), "
                       "automatic GC disabled, socket replaying the recorded issuer response",
        "micropython": ver.out.strip(),
        "batch": 4,
        "goals": GOALS,
    })
    result.update(run_pop(vm, say))
    result["meets_goals"] = {k: result[k] <= v for k, v in GOALS.items()}
    from . import device_verify

    result.update(device_verify.run(vm, say))
    return result


def render(r: dict) -> str:
    ok = {True: "ok", False: "OVER"}
    m = r["meets_goals"]
    lines = [
        f"device client (ucrumb) on MicroPython {r['micropython']} (WebAssembly port), default batch {r['batch']}",
        f"  mpy_bytes              {r['mpy_bytes']:>7,}   goal <= {GOALS['mpy_bytes']:,}  {ok[m['mpy_bytes']]}",
        "                         " + "  ".join(f"{Path(k).stem} {v:,}" for k, v in r["mpy_files"].items()),
        (f"  heap_peak_bytes        {r['heap_peak_bytes']:>7,}   goal <= {GOALS['heap_peak_bytes']:,}  "
        f"{ok[m['heap_peak_bytes']]}   (batch 1: {r['heap_peak_bytes_batch1']:,})"),
        f"  import_heap_bytes      {r['import_heap_bytes']:>7,}   (import ucrumb.client from .mpy)",
        ("  mpy_optional           " + "  ".join(f"{Path(k).stem} {v:,}" for k, v in r["mpy_optional"].items())
         + "   (shipped only to boards that ask: features = [...])"),
        (f"  coap_heap_bytes        {r['coap_heap_bytes']:>7,}   (one header() fetching a batch of 4 over CoAP; "
         f"answer payload {r['coap_response_bytes']:,} B)"),
        f"  request_bytes          {r['request_bytes']:>7,}",
        f"  response_bytes         {r['response_bytes']:>7,}   (token {r['token_bytes']} B)",
        (f"  request + response     {r['request_plus_response_bytes']:>7,}   goal <= "
        f"{GOALS['request_plus_response_bytes']}  {ok[m['request_plus_response_bytes']]}"),
        (f"  http_bytes             {r['http_bytes']:>7,}   (request {r['http_request_bytes']}, "
        f"response {r['http_response_bytes']})"),
        (f"  round_trips_per_call   {r['round_trips_per_call']:>7}   goal <= {GOALS['round_trips_per_call']}  "
        f"{ok[m['round_trips_per_call']]}   ({r['issuer_round_trips']} issuer exchanges for {r['calls']} calls, "
        f"{r['service_accepted']} accepted by the verifier)"),
        f"  heap method: {r['heap_method']}",
        "proof of possession (pop = \"batch\", first hop = the verifying service)",
        (f"  pop_request_bytes      {r['pop_request_bytes']:>7,}   (one call: Authorization "
         f"{r['pop_authorization_header_bytes']} B, Crumb-PoP {r['pop_request_header_bytes']} B)"),
        (f"  pop_heap_peak_bytes    {r['pop_heap_peak_bytes']:>7,}   goal <= {GOALS['pop_heap_peak_bytes']:,}  "
         f"{ok[m['pop_heap_peak_bytes']]}   (batch 1: {r['pop_heap_peak_bytes_batch1']:,})"),
        f"  pop_mac_ms             {r['pop_mac_ms']:>7}   (one proof, in the VM)",
        f"  pop_token_response     {r['pop_token_response_bytes']:>7,}   (the encrypted answer for 4 PoP tokens)",
        f"  pop_mpy_bytes          {r['pop_mpy_bytes']:>7,}   " + "  ".join(
            f"{Path(k).stem} {v:,}" for k, v in r["pop_mpy_files"].items()),
        f"  pop method: {r['pop_method']}",
        (f"  device_verify_ms       {r['device_verify_ms']:>7}   (ucrumb.verify, one signature; through 2 hops: "
         f"{r['device_verify_chain_ms']} ms; median of {device_verify_runs()})"),
        (f"  verify heap            {r['device_verify_min_heap_bytes']:>7,}   smallest heap it completes in "
         f"(unix port, code included); {r['device_verify_alloc_bytes']:,} B allocated in one verify"),
        (f"  verify_mpy_bytes       {r['verify_mpy_bytes']:>7,}   "
         + "  ".join(f"{Path(k).stem} {v:,}" for k, v in r["verify_mpy_files"].items()) + "  (board feature 'verify')"),
        (f"  vm pystones/s          {r['vm_pystones_per_s']:>7,}   ESTIMATES, not measurements: ESP32 "
         f"~{r['estimate_esp32_verify_ms']:,} ms, RP2040 ~{r['estimate_rp2040_verify_ms']:,} ms per verify "
         "(docs/device.md)"),
    ]
    return "\n".join(lines)


def device_verify_runs() -> str:
    from .device_verify import VERIFY_PER, VERIFY_RUNS

    return f"{VERIFY_RUNS} x {VERIFY_PER}"


def _command():
    import click

    @click.command("device")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option("--calls", default=CALLS, show_default=True, type=click.IntRange(10, 10_000),
                  help="Authorized calls for round_trips_per_call.")
    def device(as_json: bool, calls: int) -> None:
        """Size, heap, bytes on the wire and round trips of the device client, in MicroPython."""
        require("tools", "crumb bench device")
        try:
            result = run(calls=calls, progress=None if as_json else (lambda m: click.echo(m, err=True)))
        except Exception as e:  # noqa: BLE001 -- the VM, mpy-cross or a port: say what, not a traceback
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            sys.exit(1)
        click.echo(json.dumps(result, indent=1) if as_json else render(result))

    return device


command = _command()
