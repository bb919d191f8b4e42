# What the device client meets on real MicroPython ports: the methods of
# their socket and TLS-socket objects, version by version, and how they fail.
# Read from MicroPython's own source (files named below; 1.25.0 and 1.26.1
# from their release sources, 1.22 to 1.24 from the project's repository and
# the firmware stubs generated on real boards of each release). Fakes built
# here offer exactly these methods: a method the real object lacks is an
# AttributeError on the fake as on the board. They stand in for what cannot
# run here (a board's lwIP stack, mbedTLS on a board); the real unix port
# and a real TLS session through the VM's bridge are tested too
# (test_device_unix_port.py, test_device_https.py).
import time

# -- plain sockets ------------------------------------------------------------
# Unchanged from 1.22 to 1.26.
SOCKET_METHODS = {
    # ports/unix/modsocket.c, socket_locals_dict_table: no sendall
    "unix": ("accept", "bind", "close", "connect", "fileno", "listen", "makefile", "read", "readinto",
             "readline", "recv", "recvfrom", "send", "sendto", "setblocking", "setsockopt", "settimeout",
             "write"),
    # extmod/modlwip.c, lwip_socket_locals_dict_table (rp2 Pico W, stm32, mimxrt): no fileno
    "lwip": ("__del__", "accept", "bind", "close", "connect", "listen", "makefile", "read", "readinto",
             "readline", "recv", "recvfrom", "send", "sendall", "sendto", "setblocking", "setsockopt",
             "settimeout", "write"),
    # ports/esp32/modsocket.c, socket_locals_dict_table
    "esp32": ("__del__", "accept", "bind", "close", "connect", "fileno", "listen", "makefile", "read",
              "readinto", "readline", "recv", "recvfrom", "send", "sendall", "sendto", "setblocking",
              "setsockopt", "settimeout", "write"),
}

# The OSError errno when a timeout set with settimeout() passes:
# (recv/send, stream read/write and connect). The unix port raises EAGAIN
# from recv() and send() but converts it to ETIMEDOUT in its stream
# functions; lwIP raises MP_ETIMEDOUT; the ESP32 port uses newlib's errno
# numbers (MICROPY_USE_INTERNAL_ERRNO is 0 there), where ETIMEDOUT is 116.
TIMEOUT_ERRNO = {"unix": (11, 110), "lwip": (110, 110), "esp32": (116, 116)}

# -- TLS sockets ----------------------------------------------------------------
# 1.22: extmod/modssl_mbedtls.c (module `ssl`); 1.23 on: extmod/modtls_mbedtls.c
# (module `tls`). recv, recv_into, send and sendall exist only from 1.25 on,
# in builds with MBEDTLS_SSL_PROTO_DTLS (the default where mbedTLS is built at
# the "extra features" level: rp2, stm32, unix; esp32 through sdkconfig.base).
# settimeout never exists. __del__ exists where finalisers are on (every port
# with networking); getpeercert only where mbedTLS keeps the peer's
# certificate (MBEDTLS_SSL_KEEP_PEER_CERTIFICATE: ESP-IDF's and Debian's
# mbedTLS, not MicroPython's own configuration).
_TLS_BASE = ("__del__", "cipher", "close", "read", "readinto", "readline", "setblocking", "write")
_TLS_DTLS = ("recv", "recv_into", "send", "sendall")

# A board: (socket port, firmware, DTLS built in, mbedTLS major version,
# PEM parsing, peer certificate kept).
BOARDS = {
    # RPI_PICO_W 1.22.0: mbed TLS 2.28.3 (firmware stub of 1.22.0)
    "rp2 1.22": ("lwip", "1.22", False, 2, False, False),
    # ESP32_GENERIC 1.22.0: mbed TLS 3.4.1 (firmware stub of 1.22.0)
    "esp32 1.22": ("esp32", "1.22", False, 3, True, True),
    "rp2 1.24": ("lwip", "1.24", False, 3, False, False),
    "esp32 1.24": ("esp32", "1.24", False, 3, True, True),
    "rp2 1.25": ("lwip", "1.25", True, 3, False, False),
    "esp32 1.25": ("esp32", "1.25", True, 3, True, True),
    # a 1.25 build without DTLS (a board below the "extra features" level)
    "lwip 1.25 without DTLS": ("lwip", "1.25", False, 3, False, False),
    # Debian's unix port, against the system's mbedTLS 2.28 (built with DTLS)
    "unix 1.25": ("unix", "1.25", True, 2, True, True),
}


def tls_methods(board):
    _port, _ver, dtls, _major, _pem, peer = BOARDS[board]
    return _TLS_BASE + (_TLS_DTLS if dtls else ()) + (("getpeercert",) if peer else ())


# -- the peer ---------------------------------------------------------------------
STALL = "stall"  # in a script: nothing more arrives until the reader's timeout passes


class Peer:
    # The other end of a connection: it sends its script (bytes, delivered
    # at most `step` bytes per read, and STALL) then closes; it keeps what
    # it received.
    def __init__(self, script, step=7):
        self.script = [script] if isinstance(script, bytes) else list(script)
        self.step = step
        self.got = bytearray()

    def stalled(self):
        while self.script and self.script[0] == b"":
            self.script.pop(0)
        return bool(self.script) and self.script[0] == STALL

    def take(self, n):
        # Up to n bytes, b"" at the end, or STALL.
        if self.stalled():
            return STALL
        if not self.script:
            return b""
        head = self.script[0]
        k = min(n, self.step, len(head))
        self.script[0] = head[k:]
        return head[:k]


# -- fake plain sockets -------------------------------------------------------------
def _wait(self, op):
    # The peer is silent: wait for the timeout as the port does, then raise its error.
    t = self._t
    if t is None:
        raise AssertionError("a blocking %s on a silent peer would hang on the board" % op)
    if t:
        time.sleep(t)
    raise OSError(TIMEOUT_ERRNO[self._port][0 if op in ("recv", "send") else 1] if t else 11)


def _piece(self, n, op):
    if self._closed:
        raise OSError(9)
    c = self._peer.take(n)
    if c == STALL:
        _wait(self, op)
    return c


def _s_init(self, board, peer):
    self._port = BOARDS[board][0] if board in BOARDS else board
    self._peer = peer
    self._t = None
    self._closed = False
    self.timeouts = []


def _s_settimeout(self, t):
    self.timeouts.append(t)
    self._t = t


def _s_setblocking(self, flag):
    self._t = None if flag else 0


def _s_connect(self, addr):
    pass


def _s_recv(self, n):
    return _piece(self, n, "recv")


def _read(take, n):
    # Stream read over take(k) -> bytes, b"" at the end, or None (would
    # block: what was read so far, or None). An error raised by take loses
    # what was read, as MicroPython's stream layer does.
    out = b""
    while n < 0 or len(out) < n:
        c = take(4096 if n < 0 else n - len(out))
        if c is None:
            return out or None
        if not c:
            break
        out += c
    return out


def _readline(take, limit):
    out = b""
    while out[-1:] != b"\n" and (limit < 0 or len(out) < limit):
        c = take(1)
        if c is None:
            return out or None
        if not c:
            break
        out += c
    return out


def _readinto(read, buf, n):
    b = read(len(buf) if n < 0 else min(n, len(buf)))
    if b is None:
        return None
    buf[:len(b)] = b
    return len(b)


def _s_read(self, n=-1):
    return _read(lambda k: _piece(self, k, "read"), n)


def _s_readinto(self, buf, n=-1):
    return _readinto(lambda k: _s_read(self, k), buf, n)


def _s_readline(self, limit=-1):
    return _readline(lambda k: _piece(self, k, "readline"), limit)


def _s_send(self, data):
    # Takes at most `step` bytes at a time, as a busy stack does.
    if self._closed:
        raise OSError(9)
    data = bytes(data[:self._peer.step])
    self._peer.got.extend(data)
    return len(data)


def _s_write(self, data):
    if self._closed:
        raise OSError(9)
    self._peer.got.extend(bytes(data))
    return len(data)


def _s_sendall(self, data):
    _s_write(self, data)


def _s_close(self):
    self._closed = True


def _s_makefile(self, *args):
    return self


def _s_setsockopt(self, *args):
    pass


def _s_fileno(self):
    return 3


def _not_for_a_client(self, *args):
    raise AssertionError("a client has no use for this")


_SOCKET_IMPL = {"__init__": _s_init, "settimeout": _s_settimeout, "setblocking": _s_setblocking,
                "connect": _s_connect, "recv": _s_recv, "read": _s_read, "readinto": _s_readinto,
                "readline": _s_readline, "send": _s_send, "write": _s_write, "sendall": _s_sendall,
                "close": _s_close, "__del__": _s_close, "makefile": _s_makefile, "setsockopt": _s_setsockopt,
                "fileno": _s_fileno, "accept": _not_for_a_client, "bind": _not_for_a_client,
                "listen": _not_for_a_client, "recvfrom": _not_for_a_client, "sendto": _not_for_a_client}

_classes = {}


def _cls(name, methods, impl):
    key = (name, methods)
    if key not in _classes:
        d = {"__init__": impl["__init__"]}
        for m in methods:
            d[m] = impl[m]
        _classes[key] = type(name, (), d)
    return _classes[key]


def socket(board, peer):
    # A fake of the board's plain socket, connected to peer.
    port = BOARDS[board][0] if board in BOARDS else board
    return _cls("socket", SOCKET_METHODS[port], _SOCKET_IMPL)(board, peer)


# -- fake TLS sockets ----------------------------------------------------------------
# The bytes pass as they are (the peer's script is the plaintext); what is
# modelled is the object's methods and how errors come out of mbedTLS:
# an error of the socket beneath becomes OSError(-errno) and stays (every
# later operation raises it again). With mbedTLS 2 the first one is raised
# as OSError(errno), because the session is then torn down through
# mbedtls_raise_error (ssl_check_async_handshake_failure).
def _t_init(self, board, sock):
    self._board = BOARDS[board]
    self._sock = sock
    self._err = 0


def _t_op(self, fn, *args):
    s = self._sock
    if self._err:
        raise OSError(self._err)
    if s._closed:
        raise OSError(9)
    try:
        return fn(s, *args)
    except OSError as e:
        n = e.args[0]
        if n == 11:  # would block (a non-blocking socket): the stream returns None
            return None
        self._err = -n
        raise OSError(n if self._board[3] == 2 else -n)


def _raw_read(s, n):
    return _piece(s, n, "read")


def _t_recv(self, n):
    return _t_op(self, _raw_read, n)


def _t_read(self, n=-1):
    return _read(lambda k: _t_op(self, _raw_read, k), n)


def _t_readinto(self, buf, n=-1):
    return _readinto(lambda k: _t_read(self, k), buf, n)


def _t_readline(self, limit=-1):
    return _readline(lambda k: _t_op(self, _raw_read, k), limit)


def _t_send(self, data):
    return _t_op(self, _s_send, data)


def _t_write(self, data):
    return _t_op(self, _s_write, data)


def _t_setblocking(self, flag):
    self._sock.setblocking(flag)


def _t_close(self):
    _s_close(self._sock)


def _t_cipher(self):
    return ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLSv1.2")


def _t_getpeercert(self, binary_form):
    return b"0\x82 fake DER"


_TLS_IMPL = {"__init__": _t_init, "recv": _t_recv, "read": _t_read, "readinto": _t_readinto,
             "recv_into": _t_readinto, "readline": _t_readline, "send": _t_send, "write": _t_write,
             "sendall": _t_write, "setblocking": _t_setblocking, "close": _t_close, "__del__": _t_close,
             "cipher": _t_cipher, "getpeercert": _t_getpeercert}


def tls_socket(board, sock):
    # A fake of the board's TLS socket over sock (a fake plain socket).
    return _cls("SSLSocket", tls_methods(board), _TLS_IMPL)(board, sock)


def shapes():
    # Every (name, factory) where factory(peer) -> (object to read, socket beneath).
    out = []
    for port in SOCKET_METHODS:
        out.append(("%s socket" % port, lambda peer, p=port: (socket(p, peer), None)))
    for board in BOARDS:
        def make(peer, b=board):
            raw = socket(b, peer)
            return tls_socket(b, raw), raw
        out.append(("%s TLS" % board, make))
    return out


# -- the TLS modules -----------------------------------------------------------------
# MicroPython's certificate checks as a fake can make them: a "certificate"
# here is any byte string, a server presents `cert`, signed by `ca`.
PEM_BEGIN = b"-----BEGIN CERTIFICATE-----\n"


def tls_module(board, server):
    # A fake of the board's TLS module: `tls` from 1.23 on, the built-in
    # `ssl` in 1.22. server: {"ca": DER of the CA that signed the server's
    # certificate, "names": the names it is valid for, "peer": a Peer}.
    port, ver, dtls, major, pem, _peer_kept = BOARDS[board]
    from binascii import a2b_base64

    class Module:
        pass

    m = Module()
    m.__name__ = "ssl" if ver == "1.22" else "tls"
    m.PROTOCOL_TLS_CLIENT, m.PROTOCOL_TLS_SERVER = 0, 1
    m.CERT_NONE, m.CERT_OPTIONAL, m.CERT_REQUIRED = 0, 1, 2
    m.MBEDTLS_VERSION = "mbed TLS %d.x" % major
    if dtls:
        m.PROTOCOL_DTLS_CLIENT, m.PROTOCOL_DTLS_SERVER = 2, 3
    m.calls = []

    def parse(cadata):
        # mbedtls_x509_crt_parse: PEM only where PEM parsing is built in;
        # any failure is ValueError("invalid cert").
        data = cadata.encode() if isinstance(cadata, str) else bytes(cadata)
        if data.startswith(b"-----BEGIN"):
            if not pem:
                raise ValueError("invalid cert")
            data = a2b_base64(b"".join(data.split(b"\n")[1:-2]))
        if not data.startswith(b"0\x82"):
            raise ValueError("invalid cert")
        return data

    class SSLContext:
        def __init__(self, protocol):
            m.calls.append(("context", protocol))
            self._ca = []
            # the client default is CERT_REQUIRED (modtls_mbedtls.c since 1.23)
            self.verify_mode = m.CERT_REQUIRED

        def _load(self, cadata):
            m.calls.append(("ca", cadata))
            self._ca.append(parse(cadata))

        def load_cert_chain(self, certfile, keyfile):
            raise AssertionError("a client without a certificate has no use for this")

        def get_ciphers(self):
            return ["TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"]

        def set_ciphers(self, ciphers):
            pass

        def wrap_socket(self, sock, *, server_side=False, do_handshake_on_connect=True, server_hostname=None,
                        client_id=None):
            m.calls.append(("wrap", server_hostname, self.verify_mode))
            if client_id is not None and not dtls:
                raise TypeError("unexpected keyword argument 'client_id'")
            if self.verify_mode == m.CERT_REQUIRED and server_hostname is None and ver != "1.22":
                raise ValueError("CERT_REQUIRED requires server_hostname")
            if sock._peer.stalled():  # the handshake waits under the socket's timeout
                t = sock._t
                if t:
                    time.sleep(t)
                raise OSError(TIMEOUT_ERRNO[port][1])
            if self.verify_mode != m.CERT_NONE:
                if server["ca"] not in self._ca:
                    raise ValueError("\nThe certificate is not correctly signed by the trusted CA\n")
                if server_hostname not in server["names"]:
                    raise ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n")
            return tls_socket(board, sock)

    if ver == "1.22":
        # ssl.SSLContext.load_verify_locations(cafile=None, cadata=None)
        # (micropython#13098, "match CPython signature")
        def load_verify_locations(self, cafile=None, cadata=None):
            if cafile is not None:
                raise OSError(2)  # a file of that name: none on the board
            self._load(cadata)
    else:
        # tls.SSLContext.load_verify_locations(cadata): one positional
        # argument (MP_DEFINE_CONST_FUN_OBJ_2), keywords are a TypeError
        def load_verify_locations(self, *args):
            if len(args) != 1:
                raise TypeError("function takes 2 positional arguments")
            self._load(args[0])
    SSLContext.load_verify_locations = load_verify_locations
    m.SSLContext = SSLContext
    return m
