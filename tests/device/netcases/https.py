# The device client over https, end to end: tokens from the real issuer
# behind TLS, calls to a real verifying service behind TLS, the issuer's CA
# given as DER, PEM text and PEM bytes, or verification turned off; a wrong
# CA, no CA, and peers that stall before or after the handshake.
# test_device_https.py runs these on CPython, inside the MicroPython VM
# (a real TLS session through the socket bridge, with the TLS socket of
# MicroPython >= 1.25: recv/send, no settimeout) and on a real MicroPython
# unix port with mbedTLS.
import json
from binascii import unhexlify

from cases import raises

from ucrumb import client as C
from ucrumb.http import HTTPError, request, ticks_diff, ticks_ms

CFG = None
RES = "/sensors/temp01"
# Seconds for an exchange that should succeed (or fail for another reason than
# time): generous, so that a loaded machine never turns a slow TLS handshake
# into a timeout. The timeout cases use their own short one.
SLOW_OK = 30


def setup(arg):
    # arg: the path of a JSON file with the servers' URLs, the device's
    # credentials and the CAs (written by test_device_https.py).
    global CFG
    with open(arg) as f:
        CFG = json.load(f)


def device_with(cadata, **kw):
    return C.Client(CFG["issuer"], CFG["device_id"], unhexlify(CFG["key"]), cadata=cadata, timeout=SLOW_OK, **kw)


def fetch_and_call(cadata):
    c = device_with(cadata)
    assert len(c.token(RES, "read")) > 100
    assert c.round_trips == 2  # the boot resync, then the batch
    status, _hdrs, body = c.request("POST", CFG["service"] + RES, RES, "publish", body=b"21.5")
    assert status == 200, (status, body)
    assert json.loads(body)["sub"] == CFG["device_id"]
    return c


def test_ca_as_der():
    fetch_and_call(unhexlify(CFG["ca_der"]))


def test_ca_as_pem_text():
    fetch_and_call(CFG["ca_pem"])


def test_ca_as_pem_bytes():
    fetch_and_call(CFG["ca_pem"].encode())


def test_verification_turned_off():
    fetch_and_call(False)


def test_a_wrong_ca_is_refused():
    c = device_with(CFG["other_pem"])
    e = raises(C.IssuerUnavailable, c.token, RES, "read")
    assert "issuer unreachable" in str(e) and "TLS" in str(e) or "CERTIFICATE_VERIFY_FAILED" in str(e), str(e)


def test_no_ca_is_refused():
    # MicroPython has no CA store: no cadata is a refusal, never an
    # unverified connection; CPython checks against its system CAs, which
    # do not know the test CA.
    e = raises(C.IssuerUnavailable, device_with(None).token, RES, "read")
    assert "needs cadata" in str(e) or "CERTIFICATE_VERIFY_FAILED" in str(e), str(e)


def test_the_service_call_checks_the_certificate_too():
    c = device_with(unhexlify(CFG["ca_der"]))
    c.token(RES, "read")
    e = raises(HTTPError, c.request, "GET", CFG["service"] + RES, RES, "read", cadata=CFG["other_pem"])
    assert "TLS" in str(e) or "CERTIFICATE_VERIFY_FAILED" in str(e), str(e)


def _times_out(url):
    c = C.Client(url, CFG["device_id"], unhexlify(CFG["key"]), cadata=unhexlify(CFG["ca_der"]), timeout=0.5)
    t = ticks_ms()
    e = raises(C.IssuerUnavailable, c.token, RES, "read")
    assert str(e).endswith(": timed out"), str(e)
    assert ticks_diff(ticks_ms(), t) >= 400  # a timeout cannot fire early (how late: the machine's business)


def test_a_peer_silent_during_the_handshake_times_out():
    _times_out(CFG["no_handshake"])


def test_a_peer_silent_after_the_handshake_times_out():
    _times_out(CFG["bad"] + "/silent")


def test_a_peer_that_stalls_in_the_head_times_out():
    _times_out(CFG["bad"] + "/stall_head")


def test_a_peer_that_stalls_in_the_body_times_out():
    _times_out(CFG["bad"] + "/stall_body")


def test_chunked_answer_over_tls():
    c = C.Client(CFG["bad"] + "/chunked", CFG["device_id"], unhexlify(CFG["key"]),
                 cadata=unhexlify(CFG["ca_der"]), timeout=SLOW_OK)
    assert c.token(RES, "read") == b"chunked-token-0"


def test_plain_http_to_a_tls_port_fails_cleanly():
    e = raises(HTTPError, request, "POST", CFG["issuer"].replace("https://", "http://") + "/token", b"x", None, 2)
    assert str(e), e
