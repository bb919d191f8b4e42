# CoAP end to end: the device client gets tokens from the real issuer over
# CoAP (`crumb issuer serve --coap`) and calls a CoAP service that verifies
# every request (crumb.services.coap.CoapGuard), directly or through a proxy
# that loses and duplicates datagrams (tests/device/test_device_coap.py).
# Runs on CPython and inside the MicroPython VM (through its UDP bridge) and
# on the unix port.
import json

from cases import raises

from ucrumb import client as C
from ucrumb import coap

ISSUER = SERVICE = DEVICE = KEY = None


def setup(arg):
    # "ISSUER_URL|SERVICE_URL|ACK_TIMEOUT_MS|DEVICE_ID|KEY_HEX"
    global ISSUER, SERVICE, DEVICE, KEY
    ISSUER, SERVICE, ack, DEVICE, key = arg.split("|")
    coap.ACK_TIMEOUT = int(ack)  # short, so that a lost datagram costs little time
    KEY = C.unhexlify(key)


def device(**kw):
    return C.Client(ISSUER, DEVICE, KEY, timeout=60, **kw)


def test_token_and_calls():
    c = device()
    for i in range(3):
        st, _opts, body = c.request("GET", SERVICE + "/sensors/t1", "/sensors/t1", "read")
        assert st == 205, (st, body)  # 2.05 Content
        doc = json.loads(body)
        assert doc["sub"] == DEVICE and doc["resource"] == "/sensors/t1"
    tok = c.token("/sensors/t1", "read")  # the batch's fourth: a read token, presented for a POST
    st, _opts, body = coap.request("POST", SERVICE + "/sensors/t1", b"x", {coap.TOKEN_OPTION: tok}, 60)
    assert st == 403 and body.startswith(b"scope_denied: "), (st, body)  # 4.03, the code in the diagnostic
    st, _opts, body = c.request("POST", SERVICE + "/sensors/t2", "/sensors/t2", "publish", body="21.5")
    assert st == 204 and json.loads(body)["body"] == "21.5", (st, body)  # 2.04 Changed
    assert c.round_trips == 3  # boot resync, a batch of 4 for read, one for publish


def test_blockwise_batch():
    # 8 tokens do not fit a 1024-byte block: the answer comes in Block2 blocks.
    c = device(batch=8)
    c.token("/sensors/x", "read")
    assert c.cached("/sensors/x", "read") == 7 and c.round_trips == 2
    st, _opts, body = c.request("GET", SERVICE + "/sensors/x", "/sensors/x", "read")
    assert st == 205, (st, body)


def test_envelope_publish():
    c = device()
    st, _opts, body = c.publish(SERVICE, "/sensors/t2", "22.5")
    assert st == 204 and json.loads(body)["body"] == "22.5", (st, body)


def test_verifier_refuses_a_replay():
    c = device()
    tok = c.token("/config/x", "read")  # 3 uses (the policy), all spent below
    for _ in range(3):
        st, _opts, body = coap.request("GET", SERVICE + "/config/x", None, {coap.TOKEN_OPTION: tok}, 60)
        assert st == 205, (st, body)
    st, _opts, body = coap.request("GET", SERVICE + "/config/x", None, {coap.TOKEN_OPTION: tok}, 60)
    assert st == 401 and body.startswith(b"replayed: "), (st, body)


def test_issuer_refusal_over_coap():
    c = device()
    e = raises(C.Denied, c.token, "/admin/x", "read")
    assert e.code == "scope_denied", e.code


def test_no_token_is_refused():
    st, _opts, body = coap.request("GET", SERVICE + "/sensors/t1", None, None, 60)
    assert st == 401 and body.startswith(b"missing_token: "), (st, body)


MALFORMED = (
    b"",  # nothing
    b"\x40\x01\x00",  # truncated header
    b"\x80\x45\x00\x01",  # version 2
    b"\x00\x45\x00\x01",  # version 0
    b"\x49\x45\x00\x01" + b"\x00" * 9,  # token length 9
    b"\x4f\x45\x00\x01" + b"\x00" * 15,  # token length 15
    b"\x44\x45\x00\x01abc",  # token cut short
    b"\x60\x45\x00\x01\xf1\x00",  # option delta nibble 15 (not the payload marker)
    b"\x60\x45\x00\x01\x1f\x00",  # option length nibble 15
    b"\x60\x45\x00\x01\xff",  # payload marker, empty payload
    b"\x60\x45\x00\x01\xd1",  # delta 13 without its extension byte
    b"\x60\x45\x00\x01\xe1\x01",  # delta 14 with one of its two extension bytes
    b"\x60\x45\x00\x01\x1e\xff\xff",  # length 65804: far beyond the datagram (a huge option)
    b"\x60\x45\x00\x01\xb5ab",  # option value cut short
    b"\x60\x00\x00\x01\xff\x00",  # an empty message (code 0.00) with a payload
    b"\x61\x00\x00\x01\x00",  # an empty message with a token
    b"\x60\x45\x00\x01" + b"\x10" * 40,  # 40 empty options, over the bound
)


def test_parse_refuses_malformed():
    for d in MALFORMED:
        raises(ValueError, coap.parse, d)


def test_parse_round_trip():
    # Repeated options (Uri-Path segments) keep their order, whatever the port's sort does.
    path = [(11, b"%d" % i) for i in range(12)]
    m = coap.encode(2, 0x45, 0x1234, b"\x01\x02", [(65003, b"t" * 300)] + path + [(12, b"\x13"), (23, b"")],
                    b"body")
    t, code, mid, tok, opts, pl = coap.parse(m)
    assert (t, code, mid, tok, pl) == (2, 0x45, 0x1234, b"\x01\x02", b"body")
    assert opts == path + [(12, b"\x13"), (23, b""), (65003, b"t" * 300)], opts


def test_nobody_there_is_a_typed_error():
    # Nothing listens on port 9 (discard) of loopback: an unanswered (or refused) exchange ends in CoapError.
    e = raises(coap.CoapError, coap.request, "GET", "coap://127.0.0.1:9/x", None, None, 1)
    assert isinstance(e, OSError)
