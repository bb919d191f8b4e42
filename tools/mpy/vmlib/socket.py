# `socket` for the MicroPython WebAssembly VM used by crumb's tests.
#
# The wasm port has no socket module; this one forwards TCP client calls to
# the host's Node.js `net` module through the synchronous bridge registered by
# tools/mpy/run.mjs as the JS module `_crumbnet` (see netbridge.mjs).
#
# It models the socket of MicroPython's bare-metal network ports (rp2 Pico W,
# stm32, mimxrt): extmod/modlwip.c. The socket object has exactly the methods
# of lwip_socket_locals_dict_table, no more (no context manager, no fileno);
# those a client never needs (bind, listen, accept) raise OSError(EOPNOTSUPP).
# A SOCK_DGRAM socket is a UDP client as modlwip.c (v1.22-v1.24) makes one:
# connect() only sets the peer (and from then on datagrams from elsewhere are
# dropped), send/sendto send one datagram, recv/recvfrom take the one
# datagram lwIP holds (a second arriving before it is read is dropped), cut
# to the length asked, waiting in 100 ms steps then raising ETIMEDOUT (a
# timeout under 100 ms, 0 included, does not wait); recvfrom's address is
# (ip str, port); sendall raises NotImplementedError. The bridge's worker
# (networker.mjs, class Udp) keeps the one-datagram slot. Errors are OSError(errno) with MicroPython's
# numbers, as lwIP raises them: 110 ETIMEDOUT when a timeout set with
# settimeout() passes (recv and stream reads alike), 11 EAGAIN on a
# non-blocking socket with nothing to read, 111 ECONNREFUSED, 107 ENOTCONN,
# -2 name not found. A blocking socket (timeout None, the default) still
# gives up after the bridge's hard cap (run.mjs --net-max-timeout, 30 s).
# tests/device/cases/mpports.py lists the method sets of every port.
from binascii import hexlify, unhexlify

import _crumbnet as _n

AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOCK_RAW = 3
IPPROTO_TCP = 6
IPPROTO_UDP = 17
SOL_SOCKET = 1
SO_REUSEADDR = 4
TCP_NODELAY = 1


def _r(res):
    # A bridge reply: the payload, or OSError(errno).
    res = str(res)
    if res[:3] == "ok:":
        return res[3:]
    _, no, _msg = res.split(":", 2)
    raise OSError(int(no))


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    ip = _r(_n.resolve(str(host), 10000))
    return [(AF_INET, SOCK_STREAM, IPPROTO_TCP, "", (ip, int(port)))]


def _unsupported(*args):
    raise OSError(95)  # EOPNOTSUPP: the bridge is a TCP client only


class _Stream:
    # The stream methods MicroPython's socket objects share (py/stream.c),
    # over the object's recv(n): read(n) until n bytes or the end,
    # readinto(buf[, n]) likewise, readline([limit]) byte by byte.
    def read(self, n=-1):
        out = bytearray()
        while n < 0 or len(out) < n:
            b = self.recv(4096 if n < 0 else min(4096, n - len(out)))
            if not b:
                break
            out.extend(b)
        return bytes(out)

    def readinto(self, buf, n=-1):
        n = len(buf) if n < 0 else min(n, len(buf))
        b = self.read(n)
        buf[:len(b)] = b
        return len(b)

    def readline(self, limit=-1):
        out = bytearray()
        while out[-1:] != b"\n" and (limit < 0 or len(out) < limit):
            b = self.recv(1)
            if not b:
                break
            out.extend(b)
        return bytes(out)


class socket(_Stream):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        if type not in (SOCK_STREAM, SOCK_DGRAM):
            raise OSError(22)  # EINVAL, as modlwip.c for a type it does not make
        self._t = None
        self._udp = type == SOCK_DGRAM
        self._id = int(_r(_n.udp_open())) if self._udp else None

    def _ms(self):
        # JS receives small ints only (values >= 2**31 do not convert)
        return -1 if self._t is None else min(int(self._t * 1000), 0x3FFFFFFF)

    def _sid(self):
        if self._id is None:
            raise OSError(107)  # ENOTCONN
        return self._id

    bind = listen = accept = _unsupported

    def settimeout(self, t):
        self._t = t

    def setblocking(self, flag):
        self._t = None if flag else 0

    def setsockopt(self, *args):
        pass

    def connect(self, addr):
        if self._udp:
            _r(_n.udp_connect(self._sid(), str(addr[0]), int(addr[1])))
            return
        if self._id is not None:
            raise OSError(106)  # EISCONN
        ms = self._ms()
        self._id = int(_r(_n.connect(str(addr[0]), int(addr[1]), ms if ms else -1)))

    def send(self, data):
        if self._udp:
            return int(_r(_n.udp_sendto(self._sid(), hexlify(data).decode(), "", 0)))
        return int(_r(_n.send(self._sid(), hexlify(data).decode(), self._ms())))

    def sendto(self, data, addr):
        if not self._udp:
            return self.send(data)  # modlwip.c: a TCP socket's sendto ignores the address
        return int(_r(_n.udp_sendto(self._sid(), hexlify(data).decode(), str(addr[0]), int(addr[1]))))

    def _dgram(self, n):
        data, ip, port = _r(_n.udp_recv(self._sid(), int(n), self._ms())).split(",")
        return unhexlify(data), (ip, int(port))

    def recvfrom(self, n):
        if self._udp:
            return self._dgram(n)
        raise OSError(95)  # (a TCP recvfrom, which crumb never makes)

    def sendall(self, data):
        if self._udp:
            raise NotImplementedError
        mv = memoryview(data)
        while len(mv):
            mv = mv[self.send(mv[:4096]):]

    def write(self, data):
        self.sendall(data)
        return len(data)

    def recv(self, n):
        if self._udp:
            return self._dgram(n)[0]
        return unhexlify(_r(_n.recv(self._sid(), min(int(n), 65536), self._ms())))

    # read, readinto, readline: _Stream's, over recv
    def makefile(self, mode="rb", buffering=0):
        return self

    def close(self):
        if self._id is not None:
            _n.close(self._id)
            self._id = None

    __del__ = close
