# `tls` for the MicroPython WebAssembly VM used by crumb's tests: a real TLS
# session, run by Node.js on the host side of the socket bridge (the wasm
# port has no TLS of its own). The certificate chain and the server's name
# are checked for real, against the CA given here.
#
# It models MicroPython's own `tls` module as of 1.25, built with DTLS (the
# default on rp2, stm32, esp32 and the unix port): extmod/modtls_mbedtls.c,
# over the lwIP socket of vmlib/socket.py. As there:
# - SSLContext(protocol).load_verify_locations(cadata) takes one positional
#   argument, DER only (MicroPython's own mbedTLS configuration has no PEM
#   parsing before 1.28), and raises ValueError("invalid cert") otherwise;
#   verify_mode defaults to CERT_REQUIRED for a client;
# - wrap_socket(sock, *, server_side, do_handshake_on_connect,
#   server_hostname, client_id) needs server_hostname when verifying;
#   a certificate that fails verification is a ValueError with the reason;
# - the TLS socket has read, readinto, readline, write, recv, recv_into,
#   send, sendall, setblocking, close, cipher and __del__, and no
#   settimeout: its operations wait as long as the wrapped socket's timeout
#   allows;
# - after the handshake, an error of the wrapped socket (a timeout: 110) is
#   raised as OSError(-errno), as mbedTLS 3 passes it on, and stays: every
#   later operation raises it again.
# Not modelled: server side, DTLS, client certificates (load_cert_chain),
# cipher selection (get_ciphers, set_ciphers), verify_callback.
from binascii import hexlify, unhexlify
from socket import _r, _Stream

import _crumbnet as _n

PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
PROTOCOL_DTLS_CLIENT = 2
PROTOCOL_DTLS_SERVER = 3
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2
MBEDTLS_VERSION = "Node.js TLS (crumb's test bridge)"


class SSLContext:
    def __init__(self, protocol):
        if protocol != PROTOCOL_TLS_CLIENT:
            raise OSError(95)  # EOPNOTSUPP: the bridge runs TLS clients only
        self.verify_mode = CERT_REQUIRED
        self._ca = b""

    def load_verify_locations(self, *cadata):
        if len(cadata) != 1:
            raise TypeError("function takes 2 positional arguments")
        data = cadata[0]
        data = data.encode() if isinstance(data, str) else bytes(data)
        try:
            _r(_n.x509(hexlify(data).decode(), 0))
        except OSError:
            raise ValueError("invalid cert")
        self._ca = data

    def wrap_socket(self, sock, *, server_side=False, do_handshake_on_connect=True, server_hostname=None,
                    client_id=None):
        if server_side:
            raise OSError(95)
        if self.verify_mode == CERT_REQUIRED and server_hostname is None:
            raise ValueError("CERT_REQUIRED requires server_hostname")
        s = SSLSocket(self, sock, server_hostname)
        if do_handshake_on_connect:
            s._handshake()
        return s


class SSLSocket(_Stream):
    def __init__(self, ctx, sock, host):
        self._sock = sock
        self._ctx = ctx
        self._host = host or ""
        self._up = False
        self._err = 0

    def _handshake(self):
        ctx = self._ctx
        verify = ctx.verify_mode != CERT_NONE
        res = str(_n.starttls(self._sock._sid(), self._host, hexlify(ctx._ca).decode() if verify else "",
                              1 if verify else 0, self._sock._ms()))
        if res.startswith("ok:verify:"):
            self.close()
            raise ValueError("\nThe certificate verification failed: %s\n" % res[10:])
        try:
            _r(res)
        except OSError:
            self.close()
            raise  # during the handshake the socket's own errno, as MicroPython raises it
        self._up = True

    def _op(self, fn, *args):
        # One operation on the session; the wrapped socket's error becomes
        # this socket's, negated and for good.
        if self._err:
            raise OSError(self._err)
        if self._sock._id is None:
            raise OSError(9)  # EBADF: closed
        if not self._up:
            self._handshake()
        try:
            return fn(self._sock._id, *args)
        except OSError as e:
            self._err = -e.args[0]
            raise OSError(self._err)

    def _recv(self, n):
        return unhexlify(self._op(lambda i, n: _r(_n.recv(i, n, self._sock._ms())), min(int(n), 65536)))

    def _send(self, data):
        return int(self._op(lambda i, h: _r(_n.send(i, h, self._sock._ms())), hexlify(data).decode()))

    def recv(self, n):
        return self._recv(n)

    recv_into = _Stream.readinto  # read, readinto, readline: _Stream's, over recv

    def send(self, data):
        return self._send(memoryview(data)[:4096])

    def write(self, data):
        mv = memoryview(data)
        while len(mv):
            mv = mv[self._send(mv[:4096]):]
        return len(data)

    sendall = write

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def cipher(self):
        return ("TLS (Node.js)", "TLSv1.2")

    def close(self):
        self._sock.close()

    __del__ = close
