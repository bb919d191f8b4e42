# ucrumb.coap: a small CoAP client (RFC 7252) over UDP, for MicroPython and
# CPython. ucrumb.client imports it only for a coap:// URL, so HTTP-only
# firmware never loads it (and a board bundle leaves it out unless asked).
#
# One exchange = one confirmable (CON) request, retransmitted as RFC 7252
# §4.2 says: the first wait is ACK_TIMEOUT times a random factor in
# [1, ACK_RANDOM_FACTOR], doubled after each retransmission, at most
# MAX_RETRANSMIT retransmissions. The answer is matched by message id (the
# ACK) and token (the response), so duplicates, stale answers and unrelated
# or malformed datagrams are ignored; a separate response (an empty ACK,
# then the response in its own CON, which is acknowledged) is taken too.
# A response cut into blocks (RFC 7959 Block2) is fetched block by block.
# Every wait is bounded by the exchange's deadline (the timeout argument),
# whatever the retransmission schedule still allows.
#
# The socket calls are those every MicroPython port has for UDP (extmod/
# modlwip.c, modsocket.c; CPython's too): getaddrinfo, socket(AF_INET,
# SOCK_DGRAM), connect (so the stack drops datagrams from other endpoints),
# settimeout, send, recv.
import socket

from ucrumb.client import urandom
from ucrumb.http import _reason, split_rest, ticks_add, ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# Transmission parameters (RFC 7252 §4.8), module attributes so that an
# application (or a test) can change them: ACK_TIMEOUT in milliseconds.
ACK_TIMEOUT = 2000
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4

MAX_BODY = 4096  # default bound on a response's payload, all blocks together
MAX_DATAGRAM = 1280  # the largest datagram read; a larger one is dropped (RFC 7252 §4.6)
_MAX_OPTIONS = const(32)  # options in one message, beyond which it is malformed

# Copies of host/crumb/wire.py's [coap] section (tests/device/test_device_wire.py).
_CON = const(0)
_NON = const(1)
_ACK = const(2)
_RST = const(3)
_URI_PATH = const(11)
_CONTENT_FORMAT = const(12)
_MAX_AGE = const(14)
_URI_QUERY = const(15)
_BLOCK2 = const(23)
_DEFAULT_PORT = const(5683)
TOKEN_OPTION = const(65003)  # crumb's token option (PROTOCOL.md §13)
POP_OPTION = const(65007)  # the proof of possession's option (PROTOCOL.md §12.1)
ACE_CBOR = const(19)  # Content-Format application/ace+cbor
CBOR = const(60)  # Content-Format application/cbor

_METHODS = {"GET": 1, "POST": 2, "PUT": 3, "DELETE": 4}


class CoapError(OSError):
    # The exchange failed: resolve, timeout (no answer after the
    # retransmissions), a reset, or a response that breaks the block-wise rules.
    pass


def split_url(url):
    # "coap://host[:port][/path][?query]" -> (host, port, path); ValueError otherwise.
    if not url.startswith("coap://"):
        raise ValueError("URL must start with coap://: %s" % url)
    return split_rest(url[7:], _DEFAULT_PORT, url)


def uri(path):
    # A URL's "/a/b?x&y" -> ([Uri-Path and Uri-Query options], target): the options as written (no
    # percent-decoding, empty segments left out), and the target a proof of possession covers (PROTOCOL.md
    # §12.1): "/" + the Uri-Path values joined by "/", then "?" + the Uri-Query values joined by "&" if any.
    q = path.find("?")
    p = [s for s in (path if q < 0 else path[:q]).split("/") if s]
    a = [s for s in path[q + 1:].split("&") if s] if q >= 0 else []
    return ([(_URI_PATH, s.encode()) for s in p] + [(_URI_QUERY, s.encode()) for s in a],
            "/" + "/".join(p) + ("?" + "&".join(a) if a else ""))


def uint(v):
    # An option value holding an unsigned integer: big-endian, no leading zeros (§3.2).
    n = 0
    while v >> (8 * n):
        n += 1
    return v.to_bytes(n, "big")


def _ext(v, out):
    # The 4-bit nibble for an option delta or length, its extension bytes appended to out.
    if v < 13:
        return v
    if v < 269:
        out.append(v - 13)
        return 13
    v -= 269
    out.append(v >> 8)
    out.append(v & 255)
    return 14


def encode(mtype, code, mid, token, options, payload):
    # One message (§3). options: (number, bytes) pairs, in any order.
    out = bytearray((0x40 | mtype << 4 | len(token), code, mid >> 8, mid & 255))
    out.extend(token)
    last = 0
    # By number, repeated options (Uri-Path segments) in their given order: MicroPython's sort is not
    # stable, so the position breaks ties.
    for num, _, val in sorted([(o[0], i, o[1]) for i, o in enumerate(options)]):
        if len(val) > MAX_DATAGRAM:  # it could never be sent (and its length fits two extension bytes)
            raise ValueError("option %d is too long" % num)
        i = len(out)
        out.append(0)
        d = _ext(num - last, out)
        out[i] = d << 4 | _ext(len(val), out)
        out.extend(val)
        last = num
    if payload:
        out.append(0xFF)
        out.extend(payload)
    return out


def _nib(d, i, v):
    if v < 13:
        return v, i
    if v == 13:
        return d[i] + 13, i + 1
    if v == 14:
        return (d[i] << 8 | d[i + 1]) + 269, i + 2
    raise ValueError("reserved nibble 15")


def parse(d):
    # A datagram -> (type, code, message id, token, [(number, value)], payload),
    # or ValueError for anything that is not a well-formed CoAP message (§3,
    # §4.1: version 1, token length 0-8, no nibble 15, no empty payload after
    # the marker, an empty message with nothing after its header). Pure: also
    # a fuzzing entry point.
    n = len(d)
    try:
        if n < 4 or d[0] >> 6 != 1:
            raise ValueError("not CoAP version 1")
        tkl = d[0] & 15
        if tkl > 8:
            raise ValueError("token length %d" % tkl)
        code = d[1]
        i = 4 + tkl
        if i > n or (code == 0 and (tkl or n > 4)):
            raise ValueError("truncated, or an empty message with content")
        opts = []
        num = 0
        p = n
        while i < n:
            b = d[i]
            i += 1
            if b == 0xFF:
                if i == n:
                    raise ValueError("payload marker without payload")
                p = i
                break
            delta, i = _nib(d, i, b >> 4)
            length, i = _nib(d, i, b & 15)
            num += delta
            if num > 0xFFFF or i + length > n or len(opts) >= _MAX_OPTIONS:
                raise ValueError("option number over 65535, option beyond the message, or too many")
            opts.append((num, bytes(d[i:i + length])))
            i += length
    except IndexError:
        raise ValueError("truncated option")
    return d[0] >> 4 & 3, code, d[2] << 8 | d[3], bytes(d[4:4 + tkl]), opts, bytes(d[p:])


def option(opts, num):
    # The value of the last option num in opts (from parse()), or None.
    v = None
    for k, x in opts:
        if k == num:
            v = x
    return v


def status(code):
    # A response code as class * 100 + detail: 2.05 -> 205, 4.01 -> 401.
    return (code >> 5) * 100 + (code & 31)


_mid = [int.from_bytes(urandom(2), "big")]  # message ids: a random start, then counting (§4.4)


def _recv(s, ms):
    # One datagram within ms, or None when none came (or it was too large to be whole).
    s.settimeout(ms / 1000)
    try:
        d = s.recv(MAX_DATAGRAM + 1)
    except OSError as e:
        if _reason(e) == "timed out":
            return None
        raise e
    return d if len(d) <= MAX_DATAGRAM else None


def _critical(opts):
    # The first critical (odd-numbered) option this client does not know, or
    # None: a response carrying one is rejected (§5.4.1), and Block2 is the
    # only critical option a response to this client may carry.
    for k, _ in opts:
        if k & 1 and k != _BLOCK2:
            return k
    return None


def _transact(s, req, mid, tok, deadline):
    # Send the CON req until it is answered; the parsed response, or CoapError.
    tmo = ACK_TIMEOUT + int(ACK_TIMEOUT * (ACK_RANDOM_FACTOR - 1) * urandom(1)[0] / 255)
    tries = 0
    acked = False
    bad = None  # the critical option of a rejected response, for the error if nothing better comes
    s.send(req)
    until = ticks_add(ticks_ms(), tmo)
    while True:
        now = ticks_ms()
        left = ticks_diff(deadline, now)
        if left <= 0:
            raise CoapError("timed out")
        if not acked:
            w = ticks_diff(until, now)
            if w <= 0:
                if tries >= MAX_RETRANSMIT:
                    raise CoapError("timed out: no answer after %d retransmissions%s" % (
                        tries, "" if bad is None else " (answers rejected: unrecognized critical option %d)" % bad))
                tries += 1
                tmo *= 2
                s.send(req)
                until = ticks_add(now, tmo)
                continue
            left = min(left, w)
        d = _recv(s, left)
        if d is None:
            continue
        try:
            m = parse(d)
        except ValueError:
            continue  # not CoAP, or malformed: as if lost (§4.2 allows ignoring it)
        t, code, rmid, rtok = m[0], m[1], m[2], m[3]
        if t >= _ACK:
            if rmid != mid:
                continue  # an old exchange's, or a duplicate
            if t == _RST:
                raise CoapError("reset by the server")
            if code == 0:
                acked = True  # a separate response follows: stop retransmitting, wait for it
                continue
            if rtok == tok:
                bad = _critical(m[4])
                if bad is None:
                    return m
                # rejected: a piggybacked response by ignoring it (§4.2, §5.4.1)
        elif code >= 64 and rtok == tok:  # a separate response (CON or NON)
            bad = _critical(m[4])
            if t == _CON:  # acknowledged, or rejected with a Reset (§4.2)
                s.send(encode(_ACK if bad is None else _RST, 0, rmid, b"", (), b""))
            if bad is None:
                return m
            if acked:
                raise CoapError("the response carries an unrecognized critical option %d" % bad)


def request(method, url, payload=None, options=None, timeout=5, max_body=MAX_BODY):
    # One CoAP exchange (with as many block exchanges as the response takes).
    # Returns (status, options, payload): status as class * 100 + detail
    # (2.05 -> 205), options the response's [(number, value)] (of the last
    # block), payload bytes. CoAP error codes are returned, not raised;
    # CoapError (an OSError) is the only exception the exchange raises (a
    # ValueError from split_url or an oversized option excepted: those are
    # the caller's). options: {number: bytes, str or int value} added to the
    # request. timeout (seconds) is the deadline of the whole exchange.
    host, port, path = split_url(url)
    if isinstance(payload, str):
        payload = payload.encode()
    base = uri(path)[0]
    if options:
        for k in options:
            v = options[k]
            base.append((k, uint(v) if type(v) is int else v.encode() if isinstance(v, str) else bytes(v)))
    code = _METHODS[method]
    req = encode(_CON, code, 0, b"12345678", base, payload)  # checks the options; the size of every request
    if len(req) > MAX_DATAGRAM:
        raise ValueError("the request does not fit one datagram (%d bytes)" % len(req))
    deadline = ticks_add(ticks_ms(), int(timeout * 1000))
    s = None
    try:
        try:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        except OSError as e:
            raise CoapError("cannot resolve %s: %s" % (host, _reason(e)))
        s = socket.socket(ai[0], socket.SOCK_DGRAM)
        s.connect(ai[-1])
        body = bytearray()
        num = 0
        szx = None
        while True:
            o = base
            if num:
                o = base + [(_BLOCK2, uint(num << 4 | szx))]
            _mid[0] = mid = (_mid[0] + 1) & 0xFFFF
            tok = urandom(4)
            m = _transact(s, encode(_CON, code, mid, tok, o, b"" if num else payload), mid, tok, deadline)
            ropts, pl = m[4], m[5]
            b2 = option(ropts, _BLOCK2)
            if b2 is None and not num:
                if len(pl) > max_body:
                    raise CoapError("response body too large")
                return status(m[1]), ropts, pl
            v = int.from_bytes(b2 or b"\x07", "big")  # a block transfer that stops carrying Block2: broken
            if v & 7 == 7 or v >> 4 != num or (szx is not None and v & 7 != szx) or len(b2) > 3:
                raise CoapError("bad Block2 in the response")
            szx = v & 7
            if len(pl) > 16 << szx or (v & 8 and len(pl) != 16 << szx):
                raise CoapError("bad block size in the response")
            body.extend(pl)
            if len(body) > max_body:
                raise CoapError("response body too large")
            if not v & 8:
                return status(m[1]), ropts, bytes(body)
            num += 1
    except CoapError as e:
        raise e
    except OSError as e:
        raise CoapError("%s %s: %s" % (method, url, _reason(e)))
    except Exception as e:  # anything else a port's socket may raise
        raise CoapError("%s %s: %r" % (method, url, e))
    finally:
        if s is not None:
            try:
                s.close()
            except Exception:
                pass
