# ucrumb.http: a tiny HTTP/1.1 client over `socket`, for MicroPython and
# CPython. One request per connection (Connection: close).
#
# Bounded: the exchange has a deadline and every socket operation a timeout
# (the time left), and the status line, the headers and the body have size
# limits, so a slow, hostile or broken server ends in an HTTPError, never a
# hang or an exhausted heap.
import socket

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython: the same wrap-around arithmetic as MicroPython
    from time import monotonic_ns

    def ticks_ms():
        return (monotonic_ns() // 1000000) & 0x3FFFFFFF

    def ticks_add(t, delta):
        return (t + delta) & 0x3FFFFFFF

    def ticks_diff(a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


MAX_LINE = 512  # one status or header line
MAX_HEAD = 2048  # all header lines together
MAX_BODY = 4096  # default body limit


class HTTPError(OSError):
    # The exchange failed: resolve, connect, timeout, TLS, a reset, or a
    # response that is not well-formed HTTP/1.x within the limits.
    pass


def split_url(url):
    # "http[s]://host[:port][/path][?query]" -> (tls, host, port, path); ValueError otherwise.
    if url.startswith("http://"):
        tls, rest, port = False, url[7:], 80
    elif url.startswith("https://"):
        tls, rest, port = True, url[8:], 443
    else:
        raise ValueError("URL must start with http:// or https://: %s" % url)
    host, port, path = split_rest(rest, port, url)
    return tls, host, port, "/" + path if path[0] == "?" else path


def split_rest(rest, port, url):
    # "host[:port][/path][?query]" (a URL after its scheme, `port` its
    # default) -> (host, port, path): the authority ends at "/" or "?"
    # (RFC 3986 §3.2); ucrumb.coap's URLs too.
    i = rest.find("/")
    j = rest.find("?")
    if j >= 0 and (i < 0 or j < i):
        i = j
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    i = host.rfind(":")
    if i >= 0 and host[-1] != "]":
        port = int(host[i + 1:])
        host = host[:i]
    if host[:1] == "[":
        host = host[1:-1]
    if not host or not 0 < port < 65536:
        raise ValueError("bad host or port in URL: %s" % url)
    return host, port, path


def _ders(cadata):
    # cadata (DER bytes, or PEM as str or bytes, one or more certificates)
    # -> a list of DER certificates. DER is what every MicroPython TLS build
    # parses; PEM needs MBEDTLS_PEM_PARSE_C, which MicroPython's own mbedTLS
    # configuration (rp2, stm32, ...) leaves out.
    if isinstance(cadata, str):
        cadata = cadata.encode()
    if b"-----BEGIN" not in cadata:
        return [bytes(cadata)]
    from binascii import a2b_base64

    out = []
    for block in cadata.split(b"-----END")[:-1]:
        i = block.find(b"-----BEGIN")
        j = block.find(b"\n", i)
        if i < 0 or j < 0:
            raise ValueError("bad PEM in cadata")
        out.append(a2b_base64(b"".join(block[j:].split())))
    return out


def _load_ca(ctx, m, der):
    # One CA certificate into a MicroPython SSLContext. tls (>= 1.23) takes
    # it positionally, 1.22's ssl by keyword. 1.22 and early 1.23 pass DER to
    # mbedTLS with one byte too many, which mbedTLS >= 3.5 refuses: then the
    # same certificate as PEM, which builds with PEM parsing (ESP32) take.
    load = ctx.load_verify_locations
    try:
        load(der) if m.__name__ == "tls" else load(cadata=der)
    except (OSError, ValueError):
        from binascii import b2a_base64

        pem = b"-----BEGIN CERTIFICATE-----\n" + b2a_base64(der) + b"-----END CERTIFICATE-----\n"
        load(pem) if m.__name__ == "tls" else load(cadata=pem)


def _tls(sock, host, cadata):
    # cadata: None -> verify against the system CAs (CPython) or refuse
    # (MicroPython has no CA store); bytes/str -> verify against this CA,
    # DER or PEM; False -> no verification (explicit opt-out). The handshake
    # runs under sock's timeout.
    try:
        import tls as m  # MicroPython >= 1.23
    except ImportError:
        try:
            import ssl as m
        except ImportError:
            raise HTTPError("https needs the ssl/tls module, which this port lacks")
    if hasattr(m, "create_default_context"):  # CPython
        if cadata is False:
            ctx = m.SSLContext(m.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = m.CERT_NONE
        else:
            ctx = m.create_default_context(cadata=b"".join(_ders(cadata)) if cadata else None)
        return ctx.wrap_socket(sock, server_hostname=host)
    ctx = m.SSLContext(m.PROTOCOL_TLS_CLIENT)
    if cadata is False:
        if hasattr(m, "CERT_NONE"):
            ctx.verify_mode = m.CERT_NONE
    elif not hasattr(ctx, "load_verify_locations"):  # axTLS (esp8266)
        raise HTTPError("this port's TLS cannot verify certificates; pass cadata=False to accept that")
    elif cadata:
        ctx.verify_mode = m.CERT_REQUIRED
        for der in _ders(cadata):
            _load_ca(ctx, m, der)
    else:
        raise HTTPError("https on MicroPython needs cadata (the server's CA certificate), or cadata=False")
    return ctx.wrap_socket(sock, server_hostname=host)


class _Conn:
    # One exchange on s before deadline (ticks). s may be a plain socket or a
    # TLS object; what it offers decides how it is used, never a version:
    # - timeouts: s.settimeout(), else that of raw, the socket beneath
    #   (MicroPython's TLS objects have none; they read through raw);
    # - reading: s.recv(n) where it exists (plain sockets, CPython, the TLS
    #   objects of MicroPython >= 1.25 built with DTLS), through a small
    #   buffer; else readline(limit) and read(n), which block for the whole
    #   line or length (TLS objects of 1.22 to 1.24, and >= 1.25 without DTLS);
    # - writing: s.send() where it exists, else s.write().
    # Every socket operation is first given the time left before the
    # deadline, so a silent, stalled or dripping peer ends in "timed out".
    # A None from a read or write (would block) is a timeout too.
    def __init__(self, s, deadline, raw=None):
        self.s = s
        self.deadline = deadline
        self.t = getattr(s, "settimeout", None) or getattr(raw, "settimeout", None)
        self.r = getattr(s, "recv", None)
        self.b = b""
        self.p = 0  # bytes of b already consumed

    def left(self):
        # Give the next socket operation the time left; HTTPError once none is.
        left = ticks_diff(self.deadline, ticks_ms())
        if left <= 0:
            raise HTTPError("timed out")
        if self.t:
            self.t(left / 1000)
        return left

    def send(self, data):
        w = getattr(self.s, "send", None) or self.s.write
        mv = memoryview(data)
        while len(mv):
            self.left()
            n = w(mv)
            if n is None:
                raise HTTPError("timed out")
            if not n:
                raise HTTPError("connection closed while sending")
            mv = mv[n:]

    def _fill(self, n):
        # Append what the next recv() brings (at most n bytes); False at EOF.
        self.left()
        c = self.r(n)
        if c is None:
            raise HTTPError("timed out")
        if not c:
            return False
        self.b = self.b[self.p:] + c if self.p < len(self.b) else c
        self.p = 0
        return True

    def line(self):
        # One line, with its line end.
        if self.r is None:
            self.left()
            ln = self.s.readline(MAX_LINE)
            if ln is None:
                raise HTTPError("timed out")
            if ln[-1:] != b"\n":
                if len(ln) >= MAX_LINE:
                    raise HTTPError("line too long")
                self.left()  # a line cut short at the deadline is a timeout
                raise HTTPError("connection closed early")
            return ln
        while True:
            i = self.b.find(b"\n", self.p)
            if i >= self.p + MAX_LINE:
                raise HTTPError("line too long")
            if i >= 0:
                ln = self.b[self.p:i + 1]
                self.p = i + 1
                return ln
            if len(self.b) - self.p >= MAX_LINE:
                raise HTTPError("line too long")
            if not self._fill(1024):
                raise HTTPError("connection closed early")

    def read(self, n, eof_ok=False):
        # Exactly n bytes; with eof_ok, up to n bytes until the peer closes.
        if self.r is None:
            data = b""
            while len(data) < n:
                self.left()
                c = self.s.read(n - len(data))
                if c is None:
                    raise HTTPError("timed out")
                if not c:
                    break
                data += c
        else:
            while len(self.b) - self.p < n and self._fill(n - len(self.b) + self.p):
                pass
            data = self.b[self.p:self.p + n]
            self.p += len(data)
        if len(data) != n and not eof_ok:
            raise HTTPError("connection closed early")
        return data
    def head(self, want):
        # -> (status, {lower-case name: value}) keeping the headers named in
        # want (all when want is None) plus those that frame the body.
        while True:
            st = self.line()
            if st[:7] != b"HTTP/1." or st[8:9] != b" " or st[12:13] not in (b" ", b"\r", b"\n"):
                raise HTTPError("not an HTTP/1.x response")
            try:
                status = int(st[9:12])
            except ValueError:
                raise HTTPError("bad status line")
            if status < 100:
                raise HTTPError("bad status line")
            hdrs = {}
            used = 0
            while True:
                ln = self.line()
                if ln == b"\r\n" or ln == b"\n":
                    break
                used += len(ln)
                i = ln.find(b":")
                if used > MAX_HEAD or i < 1:
                    raise HTTPError("headers too large" if i > 0 else "bad header line")
                k = ln[:i].lower()
                if want is None or k in want or k in _FRAMING:
                    hdrs[k.decode()] = ln[i + 1:].strip().decode()
            if status >= 200:
                return status, hdrs
            # 1xx: an interim response; the real one follows

    def body(self, hdrs, limit):
        te = hdrs.get("transfer-encoding")
        if te is not None:
            if te.lower() != "chunked":
                raise HTTPError("unsupported transfer-encoding: %s" % te)
            out = bytearray()
            while True:
                ln = self.line()
                i = ln.find(b";")
                try:
                    n = int(ln if i < 0 else ln[:i], 16)
                except ValueError:
                    raise HTTPError("bad chunk size")
                if n < 0 or len(out) + n > limit:
                    raise HTTPError("response body too large")
                if n == 0:
                    while self.line() not in (b"\r\n", b"\n"):  # trailer fields
                        pass
                    return bytes(out)
                out.extend(self.read(n))
                if self.line() not in (b"\r\n", b"\n"):
                    raise HTTPError("bad chunk end")
        cl = hdrs.get("content-length")
        if cl is None:  # delimited by the end of the connection (we sent Connection: close)
            data = self.read(limit + 1, True)
            if len(data) > limit:
                raise HTTPError("response body too large")
            return data
        try:
            n = int(cl)
        except ValueError:
            raise HTTPError("bad content-length")
        if n < 0 or n > limit:
            raise HTTPError("response body too large")
        return self.read(n) if n else b""


_FRAMING = (b"content-length", b"transfer-encoding")


def read_response(s, method, deadline, max_body=MAX_BODY, want=None, raw=None):
    # Read one response from s (see _Conn; raw: the socket beneath a TLS
    # object) before deadline (ticks): (status, headers, body) or HTTPError.
    r = _Conn(s, deadline, raw)
    status, hdrs = r.head(want)
    if method == "HEAD" or status in (204, 304):
        return status, hdrs, b""
    return status, hdrs, r.body(hdrs, max_body)


_addr = {}  # host -> resolved address (a few hosts per device)


def request(method, url, body=None, headers=None, timeout=5, cadata=None, max_body=MAX_BODY, want=None):
    # One HTTP exchange. Returns (status, headers, body): header names in
    # lower case, body as bytes. HTTP error statuses are returned, not
    # raised; HTTPError is raised when there is no well-formed response, and
    # is the only exception the exchange raises: whatever a port's socket or
    # TLS layer throws becomes one (a ValueError from split_url excepted: the
    # URL is the caller's). timeout (seconds) applies to every socket
    # operation and, as a deadline, to the whole exchange. headers: {name:
    # str or bytes value}. want: the response headers to keep, as lower-case
    # bytes (None: all).
    tls, host, port, path = split_url(url)
    deadline = ticks_add(ticks_ms(), int(timeout * 1000))
    key = "%s:%d" % (host, port)
    if isinstance(body, str):
        body = body.encode()
    s = raw = None
    try:
        ai = _addr.get(key)
        if ai is None:
            try:
                ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
            except OSError as e:
                raise HTTPError("cannot resolve %s: %s" % (host, _reason(e)))
            if len(_addr) > 3:
                _addr.clear()
            _addr[key] = ai
        s = raw = socket.socket(ai[0], socket.SOCK_STREAM)
        c = _Conn(s, deadline)
        c.left()
        try:
            s.connect(ai[-1])
        except OSError as e:
            _addr.pop(key, None)  # resolve again next time
            raise e
        if tls:
            c.left()
            s = _tls(raw, host, cadata)
            c = _Conn(s, deadline, raw)
        req = bytearray("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (
            method, path, host if port == (443 if tls else 80) else key), "ascii")
        if headers:
            for k in headers:
                v = headers[k]
                req.extend(k.encode())
                req.extend(b": ")
                req.extend(v.encode() if isinstance(v, str) else v)
                req.extend(b"\r\n")
        if body is not None:
            req.extend(b"Content-Length: %d\r\n" % len(body))
        req.extend(b"\r\n")
        if body:
            req.extend(body)
        c.send(req)
        req = None
        status, hdrs = c.head(want)
        if method == "HEAD" or status in (204, 304):
            return status, hdrs, b""
        return status, hdrs, c.body(hdrs, max_body)
    except HTTPError as e:
        raise e
    except OSError as e:  # timeouts, refusals, resets, TLS failures
        raise HTTPError("%s %s: %s" % (method, url, _reason(e)))
    except UnicodeError:
        raise HTTPError("undecodable response header")
    except ValueError as e:  # MicroPython's TLS refusing the certificate (the message says why)
        raise HTTPError("%s %s: TLS: %s" % (method, url, " ".join(str(e).split())))
    except Exception as e:  # anything else a port's socket or TLS may raise
        raise HTTPError("%s %s: %r" % (method, url, e))
    finally:
        for x in (s, raw):
            if x is not None:
                try:
                    x.close()
                except Exception:
                    pass


try:  # the port's own numbers (ESP32: ETIMEDOUT is 116)
    from errno import EAGAIN, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ETIMEDOUT
except ImportError:  # a port built without errno: MicroPython's internal numbers
    EAGAIN, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ETIMEDOUT = 11, 111, 104, 113, 110

_REASONS = {ECONNREFUSED: "connection refused", ECONNRESET: "connection reset",
            EHOSTUNREACH: "host unreachable", -2: "host not found", -202: "host not found"}


def _reason(e):
    # A short reason for an OSError. A timeout reads "timed out" whichever
    # way the port says it: ETIMEDOUT (lwIP, stream reads), EAGAIN (recv and
    # send on the unix port), either negated (MicroPython's TLS passes the
    # socket's error on as -errno), or CPython's TimeoutError.
    n = e.args[0] if e.args else None
    if type(n) is int:
        if n in (ETIMEDOUT, -ETIMEDOUT, EAGAIN, -EAGAIN):
            return "timed out"
        return _REASONS.get(n) or repr(e)
    if "timed out" in str(e):
        return "timed out"
    return repr(e)
