# ucrumb.http: URL splitting and response parsing, fed byte streams in
# small pieces (the network tests in test_device_failures.py cover the same
# against real sockets).
from cases import mpports, raises
from ucrumb import http
from ucrumb.http import HTTPError, read_response, split_url, ticks_add, ticks_ms


def _outcome(make, data, method, max_body, want, ms):
    s, raw = make(mpports.Peer(data))
    try:
        return read_response(s, method, ticks_add(ticks_ms(), ms), max_body, want, raw)
    except HTTPError as e:
        return e


SHAPES = mpports.shapes() + [("socket, large reads", lambda peer: (mpports.socket("lwip", _big(peer)), None))]


def _big(peer):
    peer.step = 1000
    return peer


def parse(data, method="POST", max_body=4096, want=None, ms=60000):
    # Every socket and TLS-socket shape of every port (cases/mpports.py) must
    # agree, on results and on errors. The deadline is a minute away: the
    # peers answer at once, and a loaded machine must not turn that into a timeout.
    outs = [(name, _outcome(make, data, method, max_body, want, ms)) for name, make in SHAPES]
    a = outs[0][1]
    for name, x in outs[1:]:
        assert (str(x) == str(a)) if isinstance(a, HTTPError) else (x == a), (name, a, x)
    if isinstance(a, HTTPError):
        raise a
    return a


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/ace+cbor\r\n"


def test_split_url():
    assert split_url("http://issuer.local/token") == (False, "issuer.local", 80, "/token")
    assert split_url("https://issuer.local") == (True, "issuer.local", 443, "/")
    assert split_url("http://127.0.0.1:8080/a/b?c=d") == (False, "127.0.0.1", 8080, "/a/b?c=d")
    assert split_url("https://[::1]:8443/x") == (True, "::1", 8443, "/x")
    assert split_url("http://[fe80::1]/") == (False, "fe80::1", 80, "/")
    # The authority ends at "?" too (RFC 3986 §3.2): a query without a path gets the path "/".
    assert split_url("http://h:81?x=1") == (False, "h", 81, "/?x=1")
    for bad in ("ftp://x/", "issuer:80", "http://", "http://:80/", "http://h:0/", "http://h:70000/"):
        raises(ValueError, split_url, bad)
    raises(ValueError, split_url, "http://h:port/")


def test_content_length_body():
    st, h, body = parse(OK_HEAD + b"Content-Length: 5\r\nX-Thing:  spaced value \r\n\r\nhello")
    assert st == 200 and body == b"hello"
    assert h == {"content-type": "application/ace+cbor", "content-length": "5", "x-thing": "spaced value"}


def test_want_keeps_only_named_headers_and_framing():
    _st, h, body = parse(OK_HEAD + b"Retry-After: 3\r\nDate: x\r\nContent-Length: 2\r\n\r\nok", want=(b"retry-after",))
    assert h == {"retry-after": "3", "content-length": "2"} and body == b"ok"
    _st, h, body = parse(OK_HEAD + b"Content-Length: 0\r\n\r\n", want=())
    assert h == {"content-length": "0"} and body == b""


def test_bare_lf_line_ends_and_no_reason_phrase():
    st, _h, body = parse(b"HTTP/1.0 201\nContent-Length: 3\n\nabc")
    assert (st, body) == (201, b"abc")


def test_chunked_body():
    data = (OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
            b"4\r\nwiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n")
    _st, h, body = parse(data)
    assert body == b"wikipedia in\r\n\r\nchunks."
    assert h["transfer-encoding"] == "chunked"


def test_chunked_upper_case_and_empty():
    _st, _h, body = parse(OK_HEAD + b"transfer-encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert body == b""
    _st, _h, body = parse(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1F\r\n" + b"x" * 31 + b"\r\n0\r\n\r\n")
    assert body == b"x" * 31


def test_chunked_errors():
    te = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    for tail, why in (
        (b"zz\r\nab\r\n0\r\n\r\n", "bad chunk size"),
        (b"2\r\nabc\r\n0\r\n\r\n", "bad chunk end"),
        (b"5\r\nab", "connection closed early"),
        (b"2\r\nab\r\n", "connection closed early"),
        (b"-1\r\n\r\n", "response body too large"),
        (b"1001\r\n", "response body too large"),
    ):
        e = raises(HTTPError, parse, te + tail)
        assert str(e) == why, (tail, str(e))
    e = raises(HTTPError, parse, OK_HEAD + b"Transfer-Encoding: gzip\r\n\r\n")
    assert "transfer-encoding" in str(e)
    # the limit counts every chunk together
    e = raises(HTTPError, parse, te + b"800\r\n" + b"a" * 0x800 + b"\r\n801\r\n", max_body=4096)
    assert str(e) == "response body too large"


def test_body_to_end_of_connection():
    _st, _h, body = parse(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    assert body == b"until the end"
    e = raises(HTTPError, parse, b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 101, max_body=100)
    assert str(e) == "response body too large"


def test_truncated():
    for data in (b"", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK\r\nContent-Le",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n", OK_HEAD + b"Content-Length: 10\r\n\r\nshort"):
        e = raises(HTTPError, parse, data)
        assert str(e) == "connection closed early", (data, str(e))


def test_not_http():
    for data in (b"SSH-2.0-OpenSSH_9.2\r\n", b"\x00\xff\x13garbage\r\n", b"HTTP/2 200\r\n\r\n",
                 b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 099 Low\r\n\r\n",
                 b"<html>\r\n"):
        raises(HTTPError, parse, data)


def test_bad_headers():
    e = raises(HTTPError, parse, b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
    assert str(e) == "bad header line"
    e = raises(HTTPError, parse, b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n")
    assert str(e) == "bad header line"
    for cl in (b"abc", b"-5", b"99999999"):
        raises(HTTPError, parse, OK_HEAD + b"Content-Length: " + cl + b"\r\n\r\n")


def test_limits():
    e = raises(HTTPError, parse, b"HTTP/1.1 200 OK\r\nX: " + b"a" * http.MAX_LINE + b"\r\n\r\n")
    assert str(e) == "line too long"
    many = b"".join(b"X-" + str(i).encode() + b": " + b"v" * 60 + b"\r\n" for i in range(40))
    e = raises(HTTPError, parse, b"HTTP/1.1 200 OK\r\n" + many + b"\r\n")
    assert str(e) == "headers too large"
    e = raises(HTTPError, parse, OK_HEAD + b"Content-Length: 11\r\n\r\nhello world", max_body=10)
    assert str(e) == "response body too large"


def test_interim_responses_are_skipped():
    st, h, body = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
                        + OK_HEAD + b"Content-Length: 2\r\n\r\nok")
    assert (st, body) == (200, b"ok") and "link" not in h


def test_no_body_statuses_and_head():
    st, _h, body = parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n")
    assert (st, body) == (204, b"")
    st, _h, body = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", method="HEAD")
    assert (st, body) == (200, b"")


def test_error_statuses_are_returned():
    st, h, body = parse(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy")
    assert (st, h["retry-after"], body) == (503, "7", b"busy")


def test_deadline():
    # A deadline already passed ends the read before the next line.
    e = raises(HTTPError, parse, OK_HEAD + b"Content-Length: 1\r\n\r\nx", ms=-1)
    assert str(e) == "timed out"


def test_every_read_is_given_the_time_left():
    # On the socket itself, or, for a TLS socket (which has no settimeout),
    # on the socket beneath it.
    for name, make in mpports.shapes():
        s, raw = make(mpports.Peer(OK_HEAD + b"Content-Length: 5\r\n\r\nhello", step=4))
        # A deadline a minute away: however slow the machine, time is left at every read.
        read_response(s, "GET", ticks_add(ticks_ms(), 60000), 100, None, raw)
        timeouts = (raw or s).timeouts
        assert len(timeouts) > 2, name
        assert all(0 < t <= 60.0 for t in timeouts), (name, timeouts)
