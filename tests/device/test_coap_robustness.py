"""CoAP robustness, on CPython over real UDP: malformed datagrams never stop the issuer (it keeps
answering a good request), the issuer's refusals over CoAP (codes, ACE bodies with its time, Max-Age,
audit and metrics as HTTP), the device parser under hypothesis, the device client facing a hostile
server (typed error or ignored, never anything else), and one refusal test per CoapGuard error path
with the stable code in the diagnostic payload."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from binascii import unhexlify

import aiocoap
import httpx
import pytest
from coappeers import CoapService
from hypothesis import given, settings
from hypothesis import strategies as st

from crumb import SigningKey, Verifier, cbor, mint
from crumb.replay import MemoryReplayStore
from crumb.services import envelope
from crumb.services.replay_redis import RedisReplayStore
from crumb.tooling.bench.device import BENCH_POLICY, DeviceIssuer
from crumb.wire import ERR_CODE, RESP_TIME

MALFORMED = [
    b"", b"\x40", b"\x40\x02\x00",  # truncated headers
    b"\x80\x02\x00\x01", b"\xc0\x02\x00\x01",  # versions 2 and 3
    b"\x49\x02\x00\x01" + bytes(9), b"\x4f\x02\x00\x01" + bytes(15),  # token lengths 9 and 15
    b"\x40\x02\x00\x01\xf1\x00", b"\x40\x02\x00\x01\xbf",  # option delta / length nibble 15
    b"\x40\x02\x00\x01\xb5token\xff",  # payload marker with an empty payload
    b"\x40\x02\x00\x01\xbe\xff\xff",  # a huge option length, far beyond the datagram
    b"\x40\x02\x00\x01\xbe\x03\x00" + b"a" * 1037,  # a 1037-byte Uri-Path
    b"\x40\x02\x00\x02\xd1",  # delta 13 without its byte
    bytes(range(256)), b"\xff" * 64, b"GET / HTTP/1.1\r\n\r\n",  # garbage
    b"\x50\x02\x00\x03\xb5token",  # a NON POST with no payload
    b"\x40\x01\x00\x04\xb5token\x11\x13\xff" + b"\xa1\x01\x02",  # GET /token: not allowed
    # a Uri-Path that is not UTF-8: aiocoap's Message.decode raises UnicodeDecodeError, not its
    # UnparsableMessage (fuzz target coap_guard), and its transport drops the datagram
    b"\x40\x02\x00\x05\xb5tok\xa2n\xff\xa1\x01\x02",
]


class CoapIssuer(DeviceIssuer):
    args = ("--coap", "--coap-port", "0")


@pytest.fixture(scope="module")
def issuer():
    with CoapIssuer(BENCH_POLICY, devices={"dev-robust": "sensors"}) as iss:
        iss.coap_url = f"coap://127.0.0.1:{iss.local.coap_port}"
        yield iss


@pytest.fixture
def short(monkeypatch):
    from ucrumb import coap

    monkeypatch.setattr(coap, "ACK_TIMEOUT", 100)
    return coap


def client(issuer):
    from ucrumb import client as C

    return C.Client(issuer.coap_url, "dev-robust", unhexlify(issuer.creds["dev-robust"]["key"]), timeout=10)


def test_malformed_datagrams_never_stop_the_issuer(issuer, short):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", issuer.local.coap_port))
    for d in MALFORMED * 3:
        s.send(d)
    s.close()
    c = client(issuer)
    assert len(c.token("/sensors/a", "read")) > 64  # a good request is still served
    assert issuer.local.proc.poll() is None


def test_coap_issuance_is_audited(issuer, short):
    # The same pipeline as HTTP: each CoAP answer has its audit record, with the peer's address.
    import json
    import subprocess
    import sys

    c = client(issuer)
    c.token("/sensors/audited", "read")
    p = subprocess.run([sys.executable, "-m", "crumb.cli", "audit", "tail", "--data", str(issuer.data_dir),
                        "-n", "5", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "issued" and r.get("scope") == [["/sensors/audited", "read"]]
               and r.get("peer") == "127.0.0.1" and r.get("device") == "dev-robust" for r in records), p.stdout


def test_refusals_carry_the_ace_body_and_the_time(issuer, short):
    coap = short
    url = issuer.coap_url + "/token"
    cases = [
        (b"\xa1\x01\x02", None, 415, "unsupported_media_type"),  # no Content-Format
        (b"\xa1\x01\x02", {12: 60}, 415, "unsupported_media_type"),  # application/cbor is not ace+cbor
        (b"\xa1\x01\x02", {12: 19}, 400, "malformed"),
    ]
    for body, opts, status, code in cases:
        st, ropts, data = coap.request("POST", url, body, opts, 10)
        doc = cbor.loads(data)
        assert (st, doc[ERR_CODE]) == (status, code), (st, doc)
        assert abs(doc[RESP_TIME] - time.time()) < 120
        assert coap.option(ropts, 12) == b"\x13"  # the answer is application/ace+cbor
    # Over max_request_bytes (2048 by default) in one datagram is not possible from the device client
    # (it keeps to one datagram): send it raw, as any client could.
    big = bytes(coap.encode(0, 2, 77, b"tk", [(11, b"token"), (12, b"\x13")], b"\xa1" + bytes(2100)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect(("127.0.0.1", issuer.local.coap_port))
    s.send(big)
    _, code, mid, tok, _, data = coap.parse(s.recv(4096))
    s.close()
    assert (coap.status(code), mid, tok, cbor.loads(data)[ERR_CODE]) == (413, 77, b"tk", "too_large")
    # The same pipeline as HTTP: counted in /metrics under the HTTP statuses, by code.
    metrics = httpx.get(issuer.url + "/metrics", timeout=10).text
    assert 'crumb_issuer_refusals_total{code="unsupported_media_type"}' in metrics, metrics
    assert 'code="too_large"' in metrics


def test_block1_request_over_the_limit_is_refused(issuer, short):
    coap = short
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect(("127.0.0.1", issuer.local.coap_port))
    answers = []
    for num in range(3):  # 1024-byte blocks: the third passes 2048 bytes
        block1 = bytes((num << 4 | 8 | 6,))
        s.send(bytes(coap.encode(0, 2, 100 + num, b"b1", [(11, b"token"), (12, b"\x13"), (27, block1)],
                                 bytes(1024))))
        answers.append(coap.parse(s.recv(4096)))
    s.close()
    assert [coap.status(a[1]) for a in answers] == [231, 231, 413], answers  # 2.31 Continue, then 4.13
    assert cbor.loads(answers[-1][5])[ERR_CODE] == "too_large"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_device_parser_takes_any_bytes(data):
    from ucrumb import coap

    try:
        t, code, mid, tok, opts, payload = coap.parse(data)
    except ValueError:
        return
    assert 0 <= t <= 3 and len(tok) <= 8 and 0 <= mid <= 0xFFFF and len(opts) <= 32
    # what parses, re-encoded, parses the same (delta/length extensions always in their shortest form)
    assert coap.parse(coap.encode(t, code, mid, tok, opts, payload)) == (t, code, mid, tok, opts, payload)


class Hostile:
    """A UDP server answering each request with ``script(request) -> [datagrams]``; records what it got."""

    def __init__(self, script) -> None:
        self.script = script
        self.got: list[bytes] = []

    def __enter__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"coap://127.0.0.1:{self.sock.getsockname()[1]}/x"
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self) -> None:
        from ucrumb import coap

        while not self.stop:
            try:
                d, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            self.got.append(d)
            for out in self.script(coap.parse(d)):
                self.sock.sendto(bytes(out), addr)

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def test_client_ignores_garbage_duplicates_and_strangers(short):
    coap = short

    def script(req):
        t, _, mid, tok, _, _ = req
        if t != 0:
            return []
        good = coap.encode(2, 0x45, mid, tok, [], b"ok")
        return [*MALFORMED, coap.encode(2, 0x45, mid ^ 1, tok, [], b"other mid"),
                coap.encode(2, 0x45, mid, b"zz", [], b"other token"), coap.encode(0, 0x45, 9, b"zz", [], b"x"),
                b"\x40" * 2000, good, good]

    with Hostile(script) as h:
        assert coap.request("GET", h.url, None, None, 5) == (205, [], b"ok")
        assert len(h.got) == 1  # answered at once: no retransmission


def test_client_takes_a_separate_response_and_acknowledges_it(short):
    coap = short
    sent = {}

    def script(req):
        t, _, mid, tok, _, _ = req
        if t == 2:  # our ACK of the separate response
            return []
        sent["mid"] = 4242
        return [coap.encode(2, 0, mid, b"", [], b""), coap.encode(0, 0x45, 4242, tok, [], b"later")]

    with Hostile(script) as h:
        assert coap.request("GET", h.url, None, None, 5)[2] == b"later"
        time.sleep(0)  # the ACK is sent before request() returns
        deadline = time.monotonic() + 5
        while len(h.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        ack = coap.parse(h.got[1])
        assert ack[:3] == (2, 0, 4242) and ack[3] == b""


def test_client_errors_are_typed(short):
    coap = short

    def only_garbage(req):
        return MALFORMED

    def reset(req):
        return [coap.encode(3, 0, req[2], b"", [], b"")]

    def bad_block(req):  # Block2 number 5 in answer to a first request
        return [coap.encode(2, 0x45, req[2], req[3], [(23, bytes((5 << 4 | 8 | 2,)))], bytes(64))]

    def critical(req):  # a piggybacked answer with If-Match (1): critical, and no option for a response
        return [coap.encode(2, 0x45, req[2], req[3], [(1, b"x")], b"ok")]

    coap.ACK_TIMEOUT = 20  # the whole schedule (20 ms doubling, 4 retransmissions) inside the 5 s deadline
    for script, why in ((only_garbage, "retransmissions"), (reset, "reset"), (bad_block, "Block2"),
                        (critical, "unrecognized critical option 1")):
        with Hostile(script) as h:
            with pytest.raises(coap.CoapError) as e:
                coap.request("GET", h.url, None, None, 5)
            assert why in str(e.value)
            if script in (only_garbage, critical):
                assert len(h.got) == 1 + coap.MAX_RETRANSMIT  # retransmitted, then gave up


def test_a_separate_response_with_an_unknown_critical_option_is_reset(short):
    """RFC 7252 §5.4.1: a response with a critical option the client does not recognize is rejected;
    a confirmable one with a Reset (§4.2). An elective unknown option (even number) is ignored."""
    coap = short

    def script(option):
        def answer(req):
            t, _, mid, tok, _, _ = req
            if t != 0:
                return []
            return [coap.encode(2, 0, mid, b"", [], b""), coap.encode(0, 0x45, 4242, tok, [option], b"later")]
        return answer

    with Hostile(script((2049, b"x"))) as h:
        with pytest.raises(coap.CoapError, match="unrecognized critical option 2049"):
            coap.request("GET", h.url, None, None, 5)
        deadline = time.monotonic() + 5
        while len(h.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert coap.parse(h.got[1])[:3] == (3, 0, 4242)  # the Reset
    with Hostile(script((2048, b"x"))) as h:
        assert coap.request("GET", h.url, None, None, 5)[2] == b"later"


def test_option_numbers_end_at_65535():
    from ucrumb import coap

    assert coap.parse(bytes((0x40, 1, 0, 1, 0xE0, 0xFE, 0xF2)))[4] == [(65535, b"")]  # 269 + 65266
    with pytest.raises(ValueError):
        coap.parse(bytes((0x40, 1, 0, 1, 0xE0, 0xFE, 0xF3)))  # 65536


# -- the verifier's refusals -------------------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    return SigningKey.generate()


def guarded(verifier, **kw):
    class Service(CoapService):
        def __init__(self) -> None:
            super().__init__("", verifier=verifier, guard_kw=kw)

    return Service()


def call(coap, svc, path, method="GET", token=None, payload=None, opts=None):
    o = dict(opts or {})
    if token is not None:
        o[coap.TOKEN_OPTION] = token
    return coap.request(method, svc.url + path, payload, o, 10)


def refused(answer, status, code):
    st, _, body = answer
    assert st == status and body.decode().startswith(code + ": "), answer


def test_each_guard_refusal_has_its_code(key, short):
    coap = short
    other = SigningKey.generate()
    verifier = Verifier([key.public], replay=MemoryReplayStore(fence=False))
    with guarded(verifier, max_payload=512) as svc:
        tok = mint(key, sub="d", scope=[("/sensors/t1", "read")])
        refused(call(coap, svc, "/sensors/t1"), 401, "missing_token")
        refused(call(coap, svc, "/sensors/t1", token=b"\x01\x02"), 401, "malformed")
        refused(call(coap, svc, "/sensors/t1", token=mint(other, sub="d", scope=[("/sensors/t1", "read")])),
                401, "unknown_key")
        refused(call(coap, svc, "/sensors/t1", token=mint(key, sub="d", scope=[("/sensors/t1", "read")],
                                                          now=int(time.time()) - 3600)), 401, "expired")
        refused(call(coap, svc, "/sensors/t2", token=tok), 403, "scope_denied")
        assert call(coap, svc, "/sensors/t1", token=tok)[0] == 205
        refused(call(coap, svc, "/sensors/t1", token=tok), 401, "replayed")
        # the envelope: a malformed one, then a good one
        refused(call(coap, svc, "/sensors/t1", "POST", payload=b"\x83\x01\x02\x03", opts={12: 60}), 401,
                "malformed")
        pub = mint(key, sub="d", scope=[("/sensors/t1", "publish")])
        st, _, body = call(coap, svc, "/sensors/t1", "POST", payload=envelope.pack(pub, b"21.5"), opts={12: 60})
        assert st == 204 and b'"body": "21.5"' in body
        refused(call(coap, svc, "/sensors/t1", "POST", token=tok, payload=bytes(600)), 413, "too_large")
    assert svc.rejected("missing_token") == 1 and svc.rejected("replayed") >= 1


def test_guard_refuses_bad_signatures_incomplete_chains_and_other_methods(key, short):
    coap = short
    gw = SigningKey.generate()
    with guarded(Verifier([key.public], replay=MemoryReplayStore(fence=False))) as svc:
        tok = bytearray(mint(key, sub="d", scope=[("/sensors/t1", "read")]))
        tok[-1] ^= 1  # the signature's last byte
        refused(call(coap, svc, "/sensors/t1", token=bytes(tok)), 401, "bad_signature")
        chained = mint(key, sub="d", scope=[("/sensors/t1", "read")], chain=[("gateway", gw.public)])
        refused(call(coap, svc, "/sensors/t1", token=chained), 403, "chain_incomplete")  # gateway never attested
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", svc.port))
        s.send(bytes(coap.encode(0, 5, 6, b"f5", [(11, b"sensors"), (11, b"t1")], b"")))  # FETCH
        assert coap.status(coap.parse(s.recv(4096))[1]) == 405
        s.close()


def test_coap_issuer_is_one_process():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "crumb.cli", "issuer", "serve", "--coap", "--processes", "2",
                        "--redis", "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2 and "--coap serves from one process" in p.stderr, p.stderr


def test_guard_store_unavailable_is_503(key, short):
    coap = short
    # A real Redis client towards a port nobody listens on: the replay store cannot answer.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    verifier = Verifier([key.public], replay=RedisReplayStore(f"redis://127.0.0.1:{port}/0", fence=False))
    with guarded(verifier) as svc:
        st, opts, body = call(coap, svc, "/sensors/t1", token=mint(key, sub="d", scope=[("/sensors/t1", "read")]))
        assert (st, body.split(b":")[0], coap.option(opts, 14)) == (503, b"store_unavailable", b"\x01")


def test_guard_internal_error_is_500_and_contained(key, short):
    coap = short

    def broken(path: str) -> str:
        raise RuntimeError("a bug in the application's resource mapping")

    with guarded(Verifier([key.public], replay=MemoryReplayStore(fence=False)), resource=broken) as svc:
        tok = mint(key, sub="d", scope=[("/sensors/t1", "read")])
        refused(call(coap, svc, "/sensors/t1", token=tok), 500, "internal_error")
        refused(call(coap, svc, "/sensors/t1", token=tok), 500, "internal_error")  # still serving


def test_two_token_options_are_refused(key, short):
    coap = short
    with guarded(Verifier([key.public], replay=MemoryReplayStore(fence=False))) as svc:
        tok = mint(key, sub="d", scope=[("/sensors/t1", "read")])
        req = coap.encode(0, 1, 5, b"t2", [(11, b"sensors"), (11, b"t1"), (65003, tok), (65003, tok)], b"")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", svc.port))
        s.send(bytes(req))
        _, code, _, _, _, body = coap.parse(s.recv(4096))
        s.close()
        assert coap.status(code) == 401 and body.startswith(b"malformed: "), body


def test_aiocoap_client_against_the_guard(key):
    # An independent CoAP implementation (aiocoap's client) reaches the same verdicts.
    verifier = Verifier([key.public], replay=MemoryReplayStore(fence=False))
    tok = mint(key, sub="d", scope=[("/sensors/t1", "read")])

    async def go(port):
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = []
            for t in (tok, tok):
                msg = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/sensors/t1")
                msg.opt.add_option(aiocoap.optiontypes.OpaqueOption(65003, t))
                r = await ctx.request(msg).response
                out.append((str(r.code), r.payload))
            return out
        finally:
            await ctx.shutdown()

    with guarded(verifier) as svc:
        out = asyncio.run(go(svc.port))
    assert out[0][0].startswith("2.05") and out[1][0].startswith("4.01") and out[1][1].startswith(b"replayed: ")


def test_malformed_proof_options_are_refused(key, short):
    # Option 65007 (PROTOCOL.md §12.1) empty, oversized or repeated, or beside an envelope: refused. Each
    # request first goes to a guard whose Verifier has its proof check switched off, where the same
    # bytes pass: the refusals come from the proof's checks and from nothing else.
    from crumb import pop

    coap = short
    hop, pop_key = SigningKey(bytes(range(100, 132))), bytes(range(16))

    def pop_token() -> bytes:
        return mint(key, sub="d", scope=[("/sensors/t1", "publish")],
                    cnf=pop.CnfSealer(pop.x25519_public(hop.public)).cnf(pop_key))

    def proven(tok: bytes, body: bytes = b"21.5") -> bytes:
        return pop.make_proof(pop_key, tok, int(time.time()), "POST", "/sensors/t1", body)

    def raw(svc, opts, payload: bytes = b"21.5"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", svc.port))
        s.send(bytes(coap.encode(0, 2, 7, b"p7", [(11, b"sensors"), (11, b"t1"), *opts], payload)))
        _, code, _, _, _, body = coap.parse(s.recv(4096))
        s.close()
        return coap.status(code), None, body

    for checked in (False, True):
        verifier = Verifier([key.public], replay=MemoryReplayStore(fence=False), pop_key=hop)
        if not checked:
            verifier._check_pop = lambda *a: None  # type: ignore[method-assign]

        def expect(answer, status, code, checked=checked):
            if checked:
                refused(answer, status, code)
            else:
                assert answer[0] == 204, answer

        with guarded(verifier) as svc:
            for value in (b"", b"\x00" * 21, b"\x00" * 600):  # empty, one byte over, far over
                expect(call(coap, svc, "/sensors/t1", "POST", pop_token(), b"21.5", {coap.POP_OPTION: value}),
                       401, "pop_failed")
            tok = pop_token()
            refused(raw(svc, [(65003, tok), (65007, proven(tok)), (65007, proven(tok))]), 401, "pop_failed")
            assert raw(svc, [(65003, tok), (65007, proven(tok))])[0] == 204  # one of them: good
            tok = pop_token()
            env = envelope.pack(tok, b"21.5", proven(tok))
            refused(raw(svc, [(12, b"\x3c"), (65007, proven(tok))], env), 401, "malformed")
            assert raw(svc, [(12, b"\x3c")], env)[0] == 204  # the envelope alone: good


def test_aiocoap_client_proves_possession(key):
    # An independent CoAP implementation (aiocoap's client) turns the URL into Uri-Path and Uri-Query
    # options; the proof made for the target of PROTOCOL.md §12.1 from the same URL verifies at the guard,
    # and the same proof for the path without the query does not.
    from crumb import pop

    hop, pop_key = SigningKey(bytes(range(100, 132))), bytes(range(16))
    cnf = pop.CnfSealer(pop.x25519_public(hop.public)).cnf(pop_key)
    tok = mint(key, sub="d", scope=[("/sensors/t1", "read")], cnf=cnf, uses=4)
    verifier = Verifier([key.public], replay=MemoryReplayStore(fence=False), pop_key=hop)

    async def go(port):
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = []
            for target in ("/sensors/t1?unit=C&n", "/sensors/t1"):
                msg = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/sensors/t1?unit=C&n")
                msg.opt.add_option(aiocoap.optiontypes.OpaqueOption(65003, tok))
                prf = pop.make_proof(pop_key, tok, int(time.time()), "GET", target, b"")
                msg.opt.add_option(aiocoap.optiontypes.OpaqueOption(65007, prf))
                r = await ctx.request(msg).response
                out.append((str(r.code), r.payload))
            return out
        finally:
            await ctx.shutdown()

    with guarded(verifier) as svc:
        out = asyncio.run(go(svc.port))
    assert out[0][0].startswith("2.05"), out
    assert out[1][0].startswith("4.01") and out[1][1].startswith(b"pop_failed: "), out
