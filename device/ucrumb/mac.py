# HMAC-SHA256 (RFC 2104) on hashlib.sha256 (MicroPython has no hmac module)
# and a constant-time byte comparison for checking MACs.
from hashlib import sha256


def hmac_sha256(key, msg):
    if len(key) > 64:
        key = sha256(key).digest()
    k = bytearray(key)
    k.extend(bytes(64 - len(k)))
    for i in range(64):
        k[i] ^= 0x36
    h = sha256(k)
    h.update(msg)
    d = h.digest()
    for i in range(64):
        k[i] ^= 0x6A  # 0x36 ^ 0x5c: inner pad -> outer pad
    h = sha256(k)
    h.update(d)
    return h.digest()


def ct_eq(a, b):
    # Time depends only on the lengths, never on where the bytes differ.
    r = len(a) ^ len(b)
    if r:
        b = a
    for x, y in zip(a, b):
        r |= x ^ y
    return r == 0
