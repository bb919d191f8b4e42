# The device client against a misbehaving issuer (tests/device/badissuer.py)
# over real sockets: every case ends in the documented error, never a hang or
# an exception of another type, and a timeout never fires early.
#
# Times are checked from below, where the machine cannot matter: a timeout
# cannot end the call before it passed. From above there is only a bound ten
# times the client's timeout, to catch a hang: how fast a call fails depends
# on how busy the machine is, which a test cannot hold it to.
from cases import raises

from ucrumb import client as C
from ucrumb.http import ticks_diff, ticks_ms

KEY = bytes(range(32))
RES, OP = "/sensors/temp01", "read"
BASE = DOWN = None


def setup(arg):
    # "http://127.0.0.1:PORT,http://127.0.0.1:CLOSED_PORT"
    global BASE, DOWN
    BASE, DOWN = arg.split(",")


def client(behaviour, timeout=10, **kw):
    # The default is generous: the misbehaving issuer answers at once, and a loaded
    # machine must not turn its answer into a timeout. Timeout cases give a short one.
    return C.Client(BASE + "/" + behaviour, "dev-0001", KEY, timeout=timeout, **kw)


def unavailable(c, why, lo_ms=0):
    # token() raises IssuerUnavailable mentioning `why`, not before lo_ms (a timeout
    # cannot fire early); the upper bound, 10 x the client's timeout, only catches a hang.
    t = ticks_ms()
    e = raises(C.IssuerUnavailable, c.token, RES, OP)
    took = ticks_diff(ticks_ms(), t)
    assert why in str(e), str(e)
    assert lo_ms <= took < 10 * 1000 * c.timeout, (why, took)
    assert c.retry_in() > 0  # and the client backs off
    return e


def test_issuer_down():
    c = C.Client(DOWN, "dev-0001", KEY, timeout=1)
    unavailable(c, "refused")
    e = raises(C.IssuerUnavailable, c.token, RES, OP)  # backing off: no connection attempt
    assert "backing off" in str(e), str(e)
    assert c.round_trips == 1  # the second call never reached the network


def test_issuer_silent_times_out():
    unavailable(client("silent", 0.5), "timed out", lo_ms=400)


def test_issuer_stalls_in_the_head():
    unavailable(client("stall_head", 0.5), "timed out", lo_ms=400)


def test_issuer_stalls_in_the_body():
    unavailable(client("stall_body", 0.5), "timed out", lo_ms=400)


def test_issuer_drips_bytes():
    # A byte every 50 ms never trips a per-operation timeout; the deadline does.
    unavailable(client("drip", 1), "timed out", lo_ms=900)


def test_garbage():
    unavailable(client("garbage"), "not an HTTP/1.x response")


def test_not_cbor():
    unavailable(client("not_cbor"), "HTTP 200 without a crumb response")


def test_truncated_body():
    unavailable(client("trunc_body"), "connection closed early")


def test_truncated_head():
    unavailable(client("trunc_head"), "connection closed early")


def test_connection_reset():
    e = unavailable(client("reset"), "unreachable")
    assert "reset" in str(e) or "closed early" in str(e), str(e)


def test_http_500():
    unavailable(client("http500"), "HTTP 500")


def test_http_503_with_crumb_refusal():
    e = unavailable(client("http503"), "store_unavailable")
    assert e.code == "store_unavailable"


def test_http_404():
    unavailable(client("http404"), "HTTP 404")


def test_http_401_with_crumb_refusal_is_denied():
    c = client("http401")
    e = raises(C.Denied, c.token, RES, OP)
    assert e.code == "bad_mac" and c.retry_in() == 0


def test_huge_body():
    unavailable(client("huge_body"), "response body too large")


def test_huge_head():
    unavailable(client("huge_head"), "headers too large")


def test_chunked_response():
    c = client("chunked")
    t = ticks_ms()
    assert c.token(RES, OP) == b"chunked-token-0"
    # The issuer's time, plus the whole seconds since its answer (none, unless the machine stalled).
    assert c.cached(RES, OP) == 3 and 0 <= c.now() - 1800000000 <= ticks_diff(ticks_ms(), t) // 1000


def test_body_until_close():
    c = client("eof_body", batch=1)
    assert c.token(RES, OP) == b"chunked-token-0"


def test_interim_response():
    assert client("interim").token(RES, OP) == b"chunked-token-0"


def test_slow_but_in_time():
    # The issuer waits 300 ms before its answer: well within the client's timeout.
    t = ticks_ms()
    assert client("slow_ok").token(RES, OP) == b"chunked-token-0"
    assert ticks_diff(ticks_ms(), t) >= 250


def test_spoofed_issuer_time_is_refused_and_the_device_resyncs():
    # One answer with time 2**64 - 1 (a network attacker's): refused, not
    # adopted; the next answer syncs the clock and token() works again.
    from binascii import hexlify

    c = C.Client(BASE + "/spoofed_time", "dev-" + hexlify(C.urandom(6)).decode(), KEY, timeout=10, batch=1,
                 backoff=0.001)
    e = raises(C.IssuerUnavailable, c.token, RES, OP)
    assert e.code == "bad_time" and c.now() == 0, (e.code, str(e), c.now())
    t = ticks_ms()
    while c.retry_in() and ticks_diff(ticks_ms(), t) < 10000:  # the backoff: at most 1 ms
        pass
    assert c.token(RES, OP) == b"chunked-token-0"
    assert c.round_trips == 2 and 1800000000 <= c.now() < 1800000000 + 60


def test_request_to_a_service_that_fails():
    # Client.request(): the token is fine, the call's own failure is an HTTPError (an OSError).
    from ucrumb.http import HTTPError

    c = client("chunked")
    e = raises(HTTPError, c.request, "GET", DOWN + "/x", RES, OP)
    assert "refused" in str(e)
