# Small deterministic CBOR (RFC 8949) for the crumb protocol subset:
# unsigned/negative ints (64 bit), byte/text strings, arrays, maps,
# false/true/null.  Runs unmodified on MicroPython >= 1.22 and CPython.
#
# dumps(): core deterministic encoding (RFC 8949 s4.2.1): shortest heads,
# definite lengths, map keys sorted bytewise by their encodings.
# loads(): strict; accepts exactly the encodings dumps() produces and raises
# CBORError (a ValueError) for anything else: trailing bytes, truncation,
# indefinite lengths, non-shortest heads, tags, floats, simple values other
# than false/true/null, invalid UTF-8, duplicate or unsorted map keys, keys
# that are not int/text (PROTOCOL.md §2; dumps() refuses to write them too),
# and input beyond the depth/item/length bounds.
# Declared lengths are checked against the bounds and the remaining input
# before anything is allocated for them. max_items bounds the items of the
# whole input, not of each container as the host's decoder does: it caps the
# heap one issuer answer can take on a small device.


class CBORError(ValueError):
    pass


def _head(out, mt, n):
    mt <<= 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    else:
        k = 2 if n < 0x10000 else 4 if n < 0x100000000 else 8
        if n >> 64:
            raise CBORError("int range")
        out.append(mt | (25 if k == 2 else 26 if k == 4 else 27))
        out.extend(n.to_bytes(k, "big"))


def _enc(v, out):
    if v is None:
        out.append(0xF6)
    elif v is True:
        out.append(0xF5)
    elif v is False:
        out.append(0xF4)
    elif isinstance(v, int):
        if v < 0:
            _head(out, 1, -1 - v)
        else:
            _head(out, 0, v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, 2, len(v))
        out.extend(v)
    elif isinstance(v, str):
        v = v.encode()
        _head(out, 3, len(v))
        out.extend(v)
    elif isinstance(v, (list, tuple)):
        _head(out, 4, len(v))
        for x in v:
            _enc(x, out)
    elif isinstance(v, dict):
        _head(out, 5, len(v))
        kv = []
        for k, x in v.items():
            if not isinstance(k, (int, str)) or isinstance(k, bool):
                raise CBORError("key type")
            kv.append((dumps(k), x))
        kv.sort(key=lambda e: e[0])
        for k, x in kv:
            out.extend(k)
            _enc(x, out)
    else:
        raise CBORError("type")


def dumps(v):
    out = bytearray()
    _enc(v, out)
    return bytes(out)


def _utf8(b):
    # Strict RFC 3629 check (MicroPython's decoder accepts overlong forms,
    # surrogates and code points above U+10FFFF).
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        i += 1
        if c < 0x80:
            continue
        lo = 0x80
        hi = 0xBF
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            k = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + k > n or not lo <= b[i] <= hi:
            return False
        for j in range(i + 1, i + k):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k
    return True


class _Dec:
    def __init__(self, b, depth, items, slen):
        self.b = b
        self.p = 0
        self.depth = depth
        self.items = items
        self.slen = slen

    def take(self, n):
        p = self.p
        if n > len(self.b) - p:
            raise CBORError("truncated")
        self.p = p + n
        return self.b[p : p + n]

    def item(self, d):
        self.items -= 1
        if self.items < 0:
            raise CBORError("too many items")
        p = self.p
        if p >= len(self.b):
            raise CBORError("truncated")
        ib = self.b[p]
        self.p = p + 1
        mt = ib >> 5
        ai = ib & 31
        if mt == 7:
            if 20 <= ai <= 22:
                return (False, True, None)[ai - 20]
            raise CBORError("simple/float")
        if mt == 6:
            raise CBORError("tag")
        if ai < 24:
            n = ai
        elif ai < 28:
            k = 1 << (ai - 24)
            n = int.from_bytes(self.take(k), "big")
            if n < (24 if k == 1 else 1 << (4 * k)):
                raise CBORError("non-shortest")
        elif ai == 31:
            raise CBORError("indefinite")
        else:
            raise CBORError("reserved")
        if mt == 0:
            return n
        if mt == 1:
            return -1 - n
        rem = len(self.b) - self.p
        if mt < 4:
            if n > self.slen:
                raise CBORError("string too long")
            s = self.take(n)
            if mt == 2:
                return s
            if n and max(s) > 127 and not _utf8(s):
                raise CBORError("utf-8")
            try:
                return s.decode()
            except Exception:
                raise CBORError("utf-8")
        if d >= self.depth:
            raise CBORError("too deep")
        d += 1
        if mt == 4:
            if n > rem:
                raise CBORError("truncated")
            if n > self.items:
                raise CBORError("too many items")
            a = []
            for _ in range(n):
                a.append(self.item(d))
            return a
        # map: every entry needs at least two more bytes and two items
        if n > rem >> 1:
            raise CBORError("truncated")
        if n > self.items >> 1:
            raise CBORError("too many items")
        m = {}
        last = b""
        for _ in range(n):
            p = self.p
            k = self.item(d)
            if not isinstance(k, (int, str)) or isinstance(k, bool):
                raise CBORError("key type")
            kb = self.b[p : self.p]
            if kb <= last:
                raise CBORError("key order/duplicate")
            last = kb
            m[k] = self.item(d)
        return m


def loads(data, max_depth=16, max_items=512, max_len=4096):
    """Decode exactly one CBOR item from data (bytes-like); see module doc."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("not bytes")
    b = data if type(data) is bytes else bytes(data)
    dec = _Dec(b, max_depth, max_items, max_len)
    v = dec.item(0)
    if dec.p != len(b):
        raise CBORError("trailing bytes")
    return v
