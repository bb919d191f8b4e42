# The device client against a misbehaving issuer (tests/device/badissuer.py)
# over real sockets: every case ends in the documented error within its time
# bound, never a hang or an exception of another type.
from ucrumb import client as C
from ucrumb.http import ticks_diff, ticks_ms

from cases import raises

KEY = bytes(range(32))
RES, OP = "/sensors/temp01", "read"
BASE = DOWN = None


def setup(arg):
    # "http://127.0.0.1:PORT,http://127.0.0.1:CLOSED_PORT"
    global BASE, DOWN
    BASE, DOWN = arg.split(",")


def client(behaviour, timeout=1, **kw):
    return C.Client(BASE + "/" + behaviour, "dev-0001", KEY, timeout=timeout, **kw)


def unavailable(c, lo_ms, hi_ms, why):
    # token() raises IssuerUnavailable mentioning `why` after lo..hi ms.
    t = ticks_ms()
    e = raises(C.IssuerUnavailable, c.token, RES, OP)
    took = ticks_diff(ticks_ms(), t)
    assert why in str(e), str(e)
    assert lo_ms <= took <= hi_ms, (why, took)
    assert c.retry_in() > 0  # and the client backs off
    return e


def test_issuer_down():
    c = C.Client(DOWN, "dev-0001", KEY, timeout=1)
    unavailable(c, 0, 900, "refused")
    t = ticks_ms()
    e = raises(C.IssuerUnavailable, c.token, RES, OP)  # backing off: no connection attempt
    assert "backing off" in str(e) and ticks_diff(ticks_ms(), t) < 50


def test_issuer_silent_times_out():
    unavailable(client("silent", 0.5), 400, 1800, "timed out")


def test_issuer_stalls_in_the_head():
    unavailable(client("stall_head", 0.5), 400, 1800, "timed out")


def test_issuer_stalls_in_the_body():
    unavailable(client("stall_body", 0.5), 400, 1800, "timed out")


def test_issuer_drips_bytes():
    # A byte every 50 ms never trips a per-operation timeout; the deadline does.
    unavailable(client("drip", 1), 900, 2500, "timed out")


def test_garbage():
    unavailable(client("garbage"), 0, 900, "not an HTTP/1.x response")


def test_not_cbor():
    unavailable(client("not_cbor"), 0, 900, "HTTP 200 without a crumb response")


def test_truncated_body():
    unavailable(client("trunc_body"), 0, 900, "connection closed early")


def test_truncated_head():
    unavailable(client("trunc_head"), 0, 900, "connection closed early")


def test_connection_reset():
    e = unavailable(client("reset"), 0, 900, "unreachable")
    assert "reset" in str(e) or "closed early" in str(e), str(e)


def test_http_500():
    unavailable(client("http500"), 0, 900, "HTTP 500")


def test_http_503_with_crumb_refusal():
    e = unavailable(client("http503"), 0, 900, "store_unavailable")
    assert e.code == "store_unavailable"


def test_http_404():
    unavailable(client("http404"), 0, 900, "HTTP 404")


def test_http_401_with_crumb_refusal_is_denied():
    c = client("http401")
    e = raises(C.Denied, c.token, RES, OP)
    assert e.code == "bad_mac" and c.retry_in() == 0


def test_huge_body():
    unavailable(client("huge_body"), 0, 900, "response body too large")


def test_huge_head():
    unavailable(client("huge_head"), 0, 900, "headers too large")


def test_chunked_response():
    c = client("chunked")
    assert c.token(RES, OP) == b"chunked-token-0"
    assert c.cached(RES, OP) == 3 and c.now() == 1800000000


def test_body_until_close():
    c = client("eof_body", batch=1)
    assert c.token(RES, OP) == b"chunked-token-0"


def test_interim_response():
    assert client("interim").token(RES, OP) == b"chunked-token-0"


def test_slow_but_in_time():
    t = ticks_ms()
    assert client("slow_ok", 2).token(RES, OP) == b"chunked-token-0"
    assert ticks_diff(ticks_ms(), t) >= 250


def test_request_to_a_service_that_fails():
    # Client.request(): the token is fine, the call's own failure is an HTTPError (an OSError).
    from ucrumb.http import HTTPError

    c = client("chunked")
    e = raises(HTTPError, c.request, "GET", DOWN + "/x", RES, OP)
    assert "refused" in str(e)
