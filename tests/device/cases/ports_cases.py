# ucrumb.http on every socket and TLS shape of the real ports (cases/mpports.py):
# the fakes' method sets, https set-up and exchange on each board's TLS
# module, and timeouts, whichever errno the port raises for them.
import sys

from cases import mpports, raises
from ucrumb import http
from ucrumb.http import HTTPError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CA = b"0\x82\x01\x0afake CA certificate (DER)"
OTHER_CA = b"0\x82\x01\x0banother CA (DER)"
HOST = "issuer.test"


def _pem(der, text=False):
    from binascii import b2a_base64

    b64 = b2a_base64(der).strip()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
    return pem.decode() if text else pem


class SocketModule:
    # The board's `socket` module, as far as a client uses it: every
    # connection is a fake socket of the board talking to the next peer.
    AF_INET = 2
    SOCK_STREAM = 1

    def __init__(self, board, *peers):
        self.board = board
        self.peers = list(peers)
        self.made = []

    def getaddrinfo(self, host, port, af=0, type=0, proto=0, flags=0):
        return [(2, 1, 6, "", ("10.0.0.1", port))]

    def socket(self, af=2, type=1, proto=0):
        s = mpports.socket(self.board, self.peers.pop(0))
        self.made.append(s)
        return s


def on_board(board, fn, *peers, server=None, patch=None):
    # fn() with ucrumb.http's socket and TLS modules, and its errno numbers,
    # those of board (a key of mpports.BOARDS, or a socket port for http only);
    # patch(socket module, TLS module) first, if given.
    mod = SocketModule(board, *peers)
    saved = http.socket, {k: sys.modules.get(k) for k in ("tls", "ssl")}, http.ETIMEDOUT
    port = mpports.BOARDS[board][0] if board in mpports.BOARDS else board
    http.ETIMEDOUT = mpports.TIMEOUT_ERRNO[port][1]  # what the board's errno module says
    http.socket = mod
    tls = None
    if board in mpports.BOARDS:
        tls = mpports.tls_module(board, server or {"ca": CA, "names": (HOST,)})
        sys.modules["tls"] = sys.modules["ssl"] = tls
    http._addr.clear()
    try:
        if patch:
            patch(mod, tls)
        return fn(), mod, tls
    finally:
        http.socket, http.ETIMEDOUT = saved[0], saved[2]
        for k in saved[1]:
            if saved[1][k] is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = saved[1][k]
        http._addr.clear()


def get(url, cadata=None, timeout=60):
    # Generous by default: the peers answer at once (or stall, with a short timeout given),
    # and a loaded machine must not turn an answer into a timeout.
    return lambda: http.request("GET", url, timeout=timeout, cadata=cadata)


def outcome(fn):
    try:
        return fn()
    except HTTPError as e:
        return e


# -- the fakes are the real objects' shapes -----------------------------------------
# Every method name any port's socket or TLS socket has, and those some
# believe they have. (MicroPython's dir() is not used: it only lists names
# that happen to be interned already.)
NAMES = ("__del__", "__enter__", "__exit__", "accept", "bind", "cipher", "close", "connect", "detach", "fileno",
         "getpeercert", "getsockopt", "ioctl", "listen", "makefile", "read", "readinto", "readline", "readlines",
         "recv", "recv_into", "recvfrom", "send", "sendall", "sendto", "setblocking", "setsockopt", "settimeout",
         "shutdown", "write")


def _methods(obj):
    return sorted(n for n in NAMES if hasattr(obj, n) and callable(getattr(obj, n)))


def test_fakes_have_exactly_the_methods_of_the_real_objects():
    for port in mpports.SOCKET_METHODS:
        assert _methods(mpports.socket(port, mpports.Peer(b""))) == sorted(mpports.SOCKET_METHODS[port]), port
    for board in mpports.BOARDS:
        s = mpports.tls_socket(board, mpports.socket(board, mpports.Peer(b"")))
        assert _methods(s) == sorted(mpports.tls_methods(board)), board
        assert not hasattr(s, "settimeout"), board  # no MicroPython version has it
        ver, dtls = mpports.BOARDS[board][1:3]
        assert hasattr(s, "recv") == (ver >= "1.25" and dtls), board
        raises(AttributeError, getattr, s, "settimeout")


def test_the_unix_socket_has_no_sendall():
    s = mpports.socket("unix", mpports.Peer(b""))
    assert not hasattr(s, "sendall") and hasattr(s, "send")


# -- plain http on every port -----------------------------------------------------------
def test_http_on_every_port():
    for port in mpports.SOCKET_METHODS:
        peer = mpports.Peer(OK)
        res, mod, _tls = on_board(port, get("http://" + HOST + "/x"), peer)
        assert res == (200, {"content-length": "5"}, b"hello"), port
        assert peer.got.startswith(b"GET /x HTTP/1.1\r\nHost: issuer.test\r\n"), port
        assert mod.made[0]._closed, port


# -- https on every board's TLS module ------------------------------------------------------
def test_https_on_every_board_with_the_ca_as_der_pem_text_and_pem_bytes():
    for board in mpports.BOARDS:
        for cadata in (CA, _pem(CA, True), _pem(CA)):
            peer = mpports.Peer(OK)
            res, mod, tls = on_board(board, get("https://" + HOST + "/x", cadata), peer)
            assert res == (200, {"content-length": "5"}, b"hello"), (board, cadata)
            assert peer.got.startswith(b"GET /x HTTP/1.1\r\n"), board
            # the CA goes in as DER (every build parses DER; PEM parsing is
            # not in MicroPython's own mbedTLS configuration before 1.28)
            assert ("ca", CA) in tls.calls, (board, tls.calls)
            assert tls.calls[-1] == ("wrap", HOST, 2), (board, tls.calls)
            assert mod.made[0]._closed, board


def test_https_verification_is_never_skipped_silently():
    for board in mpports.BOARDS:
        r = on_board(board, lambda: outcome(get("https://" + HOST + "/x", OTHER_CA)), mpports.Peer(OK))[0]
        assert isinstance(r, HTTPError) and "not correctly signed" in str(r), (board, r)
        r = on_board(board, lambda: outcome(get("https://wrong.name/x", CA)), mpports.Peer(OK))[0]
        assert isinstance(r, HTTPError) and "does not match" in str(r), (board, r)
        r, _mod, tls = on_board(board, lambda: outcome(get("https://" + HOST + "/x", None)), mpports.Peer(OK))
        assert isinstance(r, HTTPError) and "needs cadata" in str(r), (board, r)
        assert not [c for c in tls.calls if c[0] == "wrap"], board


def test_https_explicit_opt_out():
    for board in mpports.BOARDS:
        res, _mod, tls = on_board(board, get("https://" + HOST + "/x", False), mpports.Peer(OK),
                                 server={"ca": OTHER_CA, "names": ()})
        assert res[0] == 200 and tls.calls[-1] == ("wrap", HOST, 0), (board, tls.calls)


def test_a_ca_that_is_not_a_certificate():
    r = on_board("rp2 1.25", lambda: outcome(get("https://" + HOST + "/x", b"not a certificate")),
                 mpports.Peer(OK))[0]
    assert isinstance(r, HTTPError) and "invalid cert" in str(r), r


def test_der_refused_then_pem_where_the_build_parses_pem():
    # MicroPython 1.22/1.23 hand mbedTLS a DER certificate one byte too long,
    # which mbedTLS 3.5 and later refuse: the client then tries PEM, which
    # builds with PEM parsing (ESP32) take.
    def refusing_der(board):
        def run():
            tls = sys.modules["tls"]
            real = tls.SSLContext.load_verify_locations

            def load(self, *args, **kw):
                data = (args or tuple(kw.values()))[-1]
                if not bytes(data).startswith(b"-----BEGIN"):
                    raise ValueError("invalid cert")
                return real(self, *args, **kw)

            tls.SSLContext.load_verify_locations = load
            return outcome(get("https://" + HOST + "/x", CA))
        return run

    r = on_board("esp32 1.22", refusing_der("esp32 1.22"), mpports.Peer(OK))[0]
    assert r == (200, {"content-length": "5"}, b"hello"), r
    r = on_board("rp2 1.24", refusing_der("rp2 1.24"), mpports.Peer(OK))[0]
    assert isinstance(r, HTTPError) and "invalid cert" in str(r), r


# -- timeouts, whichever errno the port raises ---------------------------------------------
STALLS = (
    [mpports.STALL],
    [b"HTTP/1.1 200 OK\r\nContent-Le", mpports.STALL],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", mpports.STALL],
)


def test_timeouts_read_timed_out_on_every_port_and_board():
    for port in mpports.SOCKET_METHODS:
        for script in STALLS:
            r = on_board(port, lambda: outcome(get("http://" + HOST + "/x", timeout=0.05)), mpports.Peer(script))[0]
            assert isinstance(r, HTTPError) and str(r).endswith(": timed out"), (port, script, r)
    for board in mpports.BOARDS:
        for script in STALLS:
            r = on_board(board, lambda: outcome(get("https://" + HOST + "/x", CA, 0.05)), mpports.Peer(script))[0]
            assert isinstance(r, HTTPError) and str(r).endswith(": timed out"), (board, script, r)


def test_a_stalled_tls_handshake_times_out():
    for board in ("rp2 1.22", "esp32 1.25", "unix 1.25"):
        r = on_board(board, lambda: outcome(get("https://" + HOST + "/x", CA, 0.05)), mpports.Peer([mpports.STALL]))
        r = r[0]
        assert isinstance(r, HTTPError) and str(r).endswith(": timed out"), (board, r)


def test_every_timeout_errno_reads_timed_out():
    # ETIMEDOUT of the port (110; 116 on ESP32), EAGAIN from the unix port's
    # recv(), both negated as MicroPython's TLS passes them on, and CPython's
    # TimeoutError; other errors keep their own words.
    for n in (http.ETIMEDOUT, -http.ETIMEDOUT, http.EAGAIN, -http.EAGAIN):
        assert http._reason(OSError(n)) == "timed out", n
    assert http._reason(OSError("timed out")) == "timed out"
    assert http._reason(OSError("The read operation timed out")) == "timed out"
    assert http._reason(OSError(http.ECONNREFUSED)) == "connection refused"
    assert http._reason(OSError(-202)) == "host not found"
    assert "12345" in http._reason(OSError(12345))


def test_tls_socket_errors_stay():
    # After a timeout, MicroPython's TLS socket raises the same error again.
    for board in ("rp2 1.25", "unix 1.25"):
        raw = mpports.socket(board, mpports.Peer([mpports.STALL]))
        raw.settimeout(0.01)
        s = mpports.tls_socket(board, raw)
        first = raises(OSError, s.read, 1).args[0]
        again = raises(OSError, s.read, 1).args[0]
        assert abs(first) == 110 and again == -110, (board, first, again)
        assert http._reason(OSError(first)) == http._reason(OSError(again)) == "timed out"
