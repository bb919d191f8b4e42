# HMAC-SHA256 (RFC 2104) on hashlib.sha256 (MicroPython has no hmac module).
# The device only computes MACs; it never checks one, so it needs no
# constant-time comparison.
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
