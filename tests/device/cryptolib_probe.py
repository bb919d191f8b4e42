# What a cryptolib module does, call by call, as lines of text; runs on
# MicroPython and CPython alike. test_device_aesccm.py runs it on the real
# unix port's cryptolib and on tests/device/standin_cryptolib.py and requires
# the same lines, so the stand-in cannot drift from the real module.
from binascii import hexlify


def _show(f, *a):
    try:
        r = f(*a)
    except Exception as e:  # the type and message are what is compared
        return "%s: %s" % (type(e).__name__, e)
    if isinstance(r, (bytes, bytearray)):
        return "%s %s" % (type(r).__name__, hexlify(r).decode())
    return type(r).__name__


def probe(m):
    out = [" ".join(sorted(n for n in dir(m) if not n.startswith("_")))]
    aes = m.aes
    k = bytes(range(16))
    k32 = bytes(range(32))
    iv = bytes(range(16, 32))
    blk = bytes(range(100, 132))
    for args in ((), (k,), (k, 1, None, 1), (k, "1"), (k, 0), (k, 3), (k, 6, iv), (bytes(15), 1),
                 (bytes(24), 1), (k32, 1), (k, 1, bytes(3)), (k, 2), (k, 2, None), (k, 2, iv),
                 (bytearray(k), 1), (memoryview(k), 1), (k, 1, iv), (5, 1), (5, 3), ("k" * 16, 1)):
        out.append(_show(aes, *args))
    e = aes(k, 1)
    for args in ((blk,), (blk,), (b"",), (bytes(15),), (bytes(15), bytes(1)), (blk, bytearray(32)),
                 (blk, bytearray(40)), (blk, bytearray(16)), (blk, bytes(32)), (), (blk, bytearray(32), 1),
                 (5,), ("x" * 16,), (bytearray(blk),), (memoryview(blk)[16:],)):
        out.append(_show(e.encrypt, *args))
    out.append(_show(e.decrypt, blk))
    b = bytearray(blk)
    e.encrypt(b, b)  # in place
    out.append(hexlify(b).decode())
    d = aes(k, 1)
    out.append(_show(d.decrypt, bytes(b)))
    out.append(_show(d.encrypt, blk))
    out.append(_show(aes(k32, 1).encrypt, blk))
    c = aes(k, 2, iv)
    out.append(_show(c.encrypt, blk[:16]))
    out.append(_show(c.encrypt, blk[16:]))  # chained on from the first call
    out.append(_show(aes(k, 2, iv).decrypt, aes(k, 2, iv).encrypt(blk)))
    return out


if __name__ == "__main__":
    import cryptolib

    for line in probe(cryptolib):
        print(line)
