# A tiny HTTP/1.1 client over `socket`, for MicroPython and CPython.
# One request per connection (Connection: close); Content-Length or chunked
# bodies; a timeout on every socket operation; sizes bounded so a hostile or
# broken server cannot exhaust the heap. TLS through `ssl` (or `tls`) when
# the URL is https.
import socket

try:
    import ssl
except ImportError:  # some ports name it tls, some have neither
    try:
        import tls as ssl
    except ImportError:
        ssl = None

MAX_HEAD = 1024  # status line + headers
MAX_BODY = 2048


class HTTPError(OSError):
    # The transport failed: connect, timeout, TLS, or a response that is not HTTP.
    pass


def split_url(url):
    if url.startswith("http://"):
        scheme, rest, port = "http", url[7:], 80
    elif url.startswith("https://"):
        scheme, rest, port = "https", url[8:], 443
    else:
        raise ValueError("URL must start with http:// or https://")
    slash = rest.find("/")
    host, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if ":" in host:
        host, p = host.rsplit(":", 1)
        port = int(p)
    if not host:
        raise ValueError("URL has no host")
    return scheme, host, port, path


def _wrap(sock, host, cadata):
    if ssl is None:
        raise HTTPError("https needs the ssl module, which this port lacks")
    if hasattr(ssl, "create_default_context"):  # CPython: system CAs unless cadata given
        ctx = ssl.create_default_context(cadata=cadata) if cadata is not False else ssl._create_unverified_context()
        return ctx.wrap_socket(sock, server_hostname=host)
    # MicroPython: verification needs the CA handed in; refuse to run without
    # one unless the caller explicitly chose cadata=False.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is False:
        ctx.verify_mode = ssl.CERT_NONE
    elif cadata:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=cadata)
    else:
        raise HTTPError("https on MicroPython needs cadata (the issuer's CA, DER) or cadata=False")
    return ctx.wrap_socket(sock, server_hostname=host)


class _Reader:
    # Buffered reads over recv(); never holds more than what it was asked for
    # plus one recv() worth of bytes.
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def _more(self):
        chunk = self.s.recv(512)
        if not chunk:
            raise HTTPError("connection closed early")
        self.buf += chunk

    def line(self, limit):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + 2:]
                return out
            if len(self.buf) > limit:
                raise HTTPError("header line too long")
            self._more()

    def exactly(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _body(r, headers, limit):
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.lower() != "chunked":
            raise HTTPError("unsupported transfer-encoding")
        out = b""
        while True:
            size = r.line(32).split(b";")[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise HTTPError("bad chunk size")
            if n == 0:
                return out
            if len(out) + n > limit:
                raise HTTPError("response body too large")
            out += r.exactly(n)
            if r.exactly(2) != b"\r\n":
                raise HTTPError("bad chunk end")
    cl = headers.get("content-length")
    if cl is None:
        raise HTTPError("response has no length")  # we never read to EOF: bounded
    try:
        n = int(cl)
    except ValueError:
        raise HTTPError("bad content-length")
    if n < 0 or n > limit:
        raise HTTPError("response body too large")
    return r.exactly(n)


def request(method, url, body=None, headers=None, timeout=5, cadata=None, max_body=MAX_BODY):
    # Returns (status, headers with lower-case names, body bytes); raises
    # HTTPError for transport failures. HTTP error statuses are returned.
    scheme, host, port, path = split_url(url)
    try:
        addr = socket.getaddrinfo(host, port)[0][-1]
    except OSError as e:
        raise HTTPError("cannot resolve %s (%s)" % (host, e))
    s = socket.socket()
    try:
        s.settimeout(timeout)
        s.connect(addr)
        if scheme == "https":
            s = _wrap(s, host, cadata)
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, host)
        if headers:
            for k in headers:
                head += "%s: %s\r\n" % (k, headers[k])
        if body is not None:
            head += "Content-Length: %d\r\n" % len(body)
        _send(s, head.encode() + b"\r\n")
        head = None
        if body:
            _send(s, body)
        r = _Reader(s)
        status_line = r.line(MAX_HEAD).split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise HTTPError("not an HTTP response")
        try:
            status = int(status_line[1])
        except ValueError:
            raise HTTPError("bad status line")
        hdrs = {}
        used = 0
        while True:
            line = r.line(MAX_HEAD)
            if not line:
                break
            used += len(line)
            if used > MAX_HEAD:
                raise HTTPError("response headers too large")
            k, sep, v = line.partition(b":")
            if not sep:
                raise HTTPError("bad header line")
            hdrs[k.strip().lower().decode()] = v.strip().decode()
        return status, hdrs, _body(r, hdrs, max_body)
    except OSError as e:  # timeouts and resets are OSErrors on both runtimes
        if isinstance(e, HTTPError):
            raise
        raise HTTPError("%s %s: %r" % (method, url, e))
    except UnicodeError:
        raise HTTPError("undecodable response headers")
    finally:
        s.close()


def _send(s, data):
    mv = memoryview(data)
    while len(mv):
        n = s.send(mv)
        if not n:
            raise HTTPError("connection closed while sending")
        mv = mv[n:]
