# Nothing but the documented errors leaves the client's entry points,
# whatever a port's socket, TLS layer or MQTT client throws at it:
#   token()    CrumbError (IssuerUnavailable, Denied, ClockUnsynced)
#   request()  those, or ucrumb.http.HTTPError (an OSError) for the call
#   publish()  those, or OSError for the MQTT client's failure
# (A real case: MicroPython >= 1.25's TLS socket has recv() but no
# settimeout(), and the AttributeError used to escape token().)
from cases import mpports
from cases.ports_cases import CA, HOST, on_board
from ucrumb import cbor
from ucrumb import client as C
from ucrumb.http import HTTPError

KEY = bytes(range(32))
TOKEN = cbor.dumps({1: b"a token", 2: 60, 34: 1, -65537: 1800000000})
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(TOKEN) + TOKEN
ODD = (AttributeError("'SSLSocket' object has no attribute 'settimeout'"), TypeError("odd"), ValueError("odd"),
       KeyError("odd"), IndexError("odd"), RuntimeError("odd"), NotImplementedError(), MemoryError(),
       UnicodeError(), ZeroDivisionError(), OSError(5), OSError(-29312), OSError("odd"))
SOCKET_METHODS = ("settimeout", "connect", "send", "write", "recv", "read", "readline", "close")


def _boom(exc):
    def boom(*args, **kw):
        raise exc
    return boom


def _run(board, method, exc, fn, tls_patch=None):
    # fn() on board, where `method` of every socket (or the socket module's
    # getaddrinfo or socket) raises exc; fn's result or its exception.
    def patch(mod, tls):
        if method in ("getaddrinfo", "socket"):
            setattr(mod, method, _boom(exc))
        elif method:
            make = mod.socket

            def socket(*args):
                s = make(*args)
                if hasattr(s, method):
                    setattr(s, method, _boom(exc))
                return s

            mod.socket = socket
        if tls_patch:
            tls_patch(tls)

    try:
        return on_board(board, fn, mpports.Peer(ANSWER), server={"ca": CA, "names": (HOST,)}, patch=patch)[0]
    except Exception as e:
        return e


def client(url="http://" + HOST, **kw):
    return C.Client(url, "dev-0001", KEY, batch=1, timeout=1, **kw)


def allowed(outcome, *types):
    return not isinstance(outcome, BaseException) or isinstance(outcome, types)


def test_token_raises_only_client_errors():
    for board in ("rp2 1.22", "rp2 1.25", "unix 1.25", "esp32 1.25"):
        for url, cadata in (("http://" + HOST, None), ("https://" + HOST, CA)):
            for method in SOCKET_METHODS + ("getaddrinfo", "socket"):
                for exc in ODD:
                    r = _run(board, method, exc, lambda url=url, cadata=cadata: client(url, cadata=cadata).token("/r", "read"))
                    assert allowed(r, C.CrumbError), (board, url, method, exc, r)


def test_token_with_a_tls_module_that_throws():
    # The TLS module itself failing in odd ways: set-up, CA, wrap.
    for exc in ODD:
        for where in ("SSLContext", "load_verify_locations", "wrap_socket"):
            def tls_patch(tls, where=where, exc=exc):
                if where == "SSLContext":
                    tls.SSLContext = _boom(exc)
                else:
                    setattr(tls.SSLContext, where, _boom(exc))

            r = _run("rp2 1.25", None, exc, lambda: client("https://" + HOST, cadata=CA).token("/r", "read"),
                     tls_patch)
            assert allowed(r, C.CrumbError), (where, exc, r)


def test_request_raises_only_client_errors_or_http_errors():
    for board in ("rp2 1.22", "rp2 1.25", "unix 1.25"):
        for method in SOCKET_METHODS:
            for exc in ODD:
                def fn():
                    c = client()
                    c._post = lambda body, max_body: (200, {}, TOKEN)  # the token comes through
                    return c.request("GET", "https://" + HOST + "/x", "/r", "read", cadata=CA)

                r = _run(board, method, exc, fn)
                assert allowed(r, C.CrumbError, HTTPError), (board, method, exc, r)


class MQTT:
    def __init__(self, exc=None):
        self.exc = exc
        self.sent = []

    def publish(self, topic, msg, retain=False, qos=0):
        if self.exc is not None:
            raise self.exc
        self.sent.append((topic, msg))


def test_publish_raises_only_client_errors_or_oserror():
    for exc in ODD:
        c = client()
        c._post = lambda body, max_body: (200, {}, TOKEN)
        try:
            c.publish(MQTT(exc), "sensors/temp01", b"21.5", resource="/r")
            r = None
        except Exception as e:
            r = e
        assert isinstance(r, OSError), (exc, r)
        assert repr(exc) in str(r) or r is exc, (exc, r)
    m = MQTT()
    c = client()
    c._post = lambda body, max_body: (200, {}, TOKEN)
    c.publish(m, "sensors/temp01", b"21.5")
    assert m.sent and cbor.loads(m.sent[0][1]) == [b"a token", b"21.5"]


def test_retry_after_must_be_ascii_digits():
    # "²".isdigit() is true; int("²") is a ValueError. The client ignores it.
    for value in ("\u00b2", "\u0663", "1e3", "-1", " ", "99999999999"):
        c = client()
        c._post = lambda body, max_body, v=value: (503, {"retry-after": v}, b"busy")
        try:
            c.token("/r", "read")
            r = None
        except Exception as e:
            r = e
        assert isinstance(r, C.IssuerUnavailable), (value, r)
    c = client()
    c._post = lambda body, max_body: (503, {"retry-after": "7"}, b"busy")
    try:
        c.token("/r", "read")
    except C.IssuerUnavailable:
        pass
    assert c.retry_in() > 6000


def test_bad_arguments_fail_at_construction():
    for kw in ({"device_id": 5}, {"device_id": ""}, {"key": "not bytes"}, {"audience": 7}, {"batch": 0}):
        args = {"issuer_url": "http://" + HOST, "device_id": "dev-0001", "key": KEY}
        args.update(kw)
        try:
            C.Client(args.pop("issuer_url"), args.pop("device_id"), args.pop("key"), **args)
            r = None
        except Exception as e:
            r = e
        assert isinstance(r, ValueError), (kw, r)
