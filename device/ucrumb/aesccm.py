# AES-CCM (RFC 3610, NIST SP 800-38C) for the device: COSE algorithm 10,
# AES-CCM-16-64-128 (13-byte nonce so L = 2, 8-byte tag, 128-bit key), with
# the tag length and L (from the nonce length: L = 15 - len(nonce)) free so
# the published vectors can be checked. Imported only by the feature that
# needs it (proof of possession), never by the client's default path.
#
# The block cipher is MicroPython's `cryptolib.aes(key, 1)` (ECB), named
# `ucryptolib` before 1.20 (extmod/moducryptolib.c; extmod/modcryptolib.c from
# 1.20 on, which still answers `import ucryptolib`). What we rely on, read in
# extmod/modcryptolib.c (1.20-1.27, unchanged for this): aes(key, mode[, IV])
# takes a 16- or 32-byte key; encrypt(in[, out]) wants ECB input in multiples
# of 16 ("blksize % 16"), writes into `out` when given (in == out is fine: the
# ECB loop goes block by block, mbedtls_aes_crypt_ecb / axTLS copy in first);
# an object keeps its first direction, so one object serves many encrypt()
# calls but never a decrypt(). CCM needs the forward cipher only. Where
# neither module exists (the WebAssembly port) a small AES-128 below does it.
#
# Bounds: messages up to 65,535 bytes, associated data up to 65,536 bytes;
# the key must be 16 bytes on every backend (alg 10 is AES-128).

try:
    from cryptolib import aes as _aes
    _BACKEND = "cryptolib"
except ImportError:
    try:
        from ucryptolib import aes as _aes
        _BACKEND = "ucryptolib"
    except ImportError:
        _aes = None
        _BACKEND = "python"

MAX_MSG = 65535
MAX_AAD = 65536

# FIPS 197 S-box
_S = (
    b"\x63\x7c\x77\x7b\xf2\x6b\x6f\xc5\x30\x01\x67\x2b\xfe\xd7\xab\x76"
    b"\xca\x82\xc9\x7d\xfa\x59\x47\xf0\xad\xd4\xa2\xaf\x9c\xa4\x72\xc0"
    b"\xb7\xfd\x93\x26\x36\x3f\xf7\xcc\x34\xa5\xe5\xf1\x71\xd8\x31\x15"
    b"\x04\xc7\x23\xc3\x18\x96\x05\x9a\x07\x12\x80\xe2\xeb\x27\xb2\x75"
    b"\x09\x83\x2c\x1a\x1b\x6e\x5a\xa0\x52\x3b\xd6\xb3\x29\xe3\x2f\x84"
    b"\x53\xd1\x00\xed\x20\xfc\xb1\x5b\x6a\xcb\xbe\x39\x4a\x4c\x58\xcf"
    b"\xd0\xef\xaa\xfb\x43\x4d\x33\x85\x45\xf9\x02\x7f\x50\x3c\x9f\xa8"
    b"\x51\xa3\x40\x8f\x92\x9d\x38\xf5\xbc\xb6\xda\x21\x10\xff\xf3\xd2"
    b"\xcd\x0c\x13\xec\x5f\x97\x44\x17\xc4\xa7\x7e\x3d\x64\x5d\x19\x73"
    b"\x60\x81\x4f\xdc\x22\x2a\x90\x88\x46\xee\xb8\x14\xde\x5e\x0b\xdb"
    b"\xe0\x32\x3a\x0a\x49\x06\x24\x5c\xc2\xd3\xac\x62\x91\x95\xe4\x79"
    b"\xe7\xc8\x37\x6d\x8d\xd5\x4e\xa9\x6c\x56\xf4\xea\x65\x7a\xae\x08"
    b"\xba\x78\x25\x2e\x1c\xa6\xb4\xc6\xe8\xdd\x74\x1f\x4b\xbd\x8b\x8a"
    b"\x70\x3e\xb5\x66\x48\x03\xf6\x0e\x61\x35\x57\xb9\x86\xc1\x1d\x9e"
    b"\xe1\xf8\x98\x11\x69\xd9\x8e\x94\x9b\x1e\x87\xe9\xce\x55\x28\xdf"
    b"\x8c\xa1\x89\x0d\xbf\xe6\x42\x68\x41\x99\x2d\x0f\xb0\x54\xbb\x16"
)


def _xt(b):
    # multiply by x in GF(2^8)
    b <<= 1
    return (b ^ 0x11B) if b & 0x100 else b


class _PyAES:
    # AES-128 forward cipher, with the part of cryptolib.aes's ECB interface
    # that CCM uses: encrypt(in, out), in a multiple of 16 bytes.
    def __init__(self, key, mode):
        if len(key) != 16 or mode != 1:
            raise ValueError("key")
        w = bytearray(176)
        w[:16] = key
        rc = 1
        for i in range(16, 176, 4):
            # one by one: a 4-tuple assignment allocates on MicroPython
            a = w[i - 4]
            b = w[i - 3]
            c = w[i - 2]
            d = w[i - 1]
            if not i & 15:
                t = a
                a = _S[b] ^ rc
                b = _S[c]
                c = _S[d]
                d = _S[t]
                rc = _xt(rc)
            w[i] = w[i - 16] ^ a
            w[i + 1] = w[i - 15] ^ b
            w[i + 2] = w[i - 14] ^ c
            w[i + 3] = w[i - 13] ^ d
        self._w = w
        self._t = bytearray(16)

    def encrypt(self, src, dst):
        for o in range(0, len(src), 16):
            self._block(src, dst, o)
        return dst

    def _block(self, src, dst, o):
        w, t, S = self._w, self._t, _S
        s = dst
        for i in range(16):
            s[o + i] = src[o + i] ^ w[i]
        for r in range(16, 176, 16):
            # SubBytes and ShiftRows: column c takes row j from column c + j
            for c in range(0, 16, 4):
                t[c] = S[s[o + c]]
                t[c + 1] = S[s[o + (c + 5) % 16]]
                t[c + 2] = S[s[o + (c + 10) % 16]]
                t[c + 3] = S[s[o + (c + 15) % 16]]
            if r == 160:
                for i in range(16):
                    s[o + i] = t[i] ^ w[r + i]
                break
            for c in range(0, 16, 4):  # MixColumns, then AddRoundKey
                a0 = t[c]
                a1 = t[c + 1]
                a2 = t[c + 2]
                a3 = t[c + 3]
                x = a0 ^ a1 ^ a2 ^ a3
                k = r + c
                s[o + c] = a0 ^ x ^ _xt(a0 ^ a1) ^ w[k]
                s[o + c + 1] = a1 ^ x ^ _xt(a1 ^ a2) ^ w[k + 1]
                s[o + c + 2] = a2 ^ x ^ _xt(a2 ^ a3) ^ w[k + 2]
                s[o + c + 3] = a3 ^ x ^ _xt(a3 ^ a0) ^ w[k + 3]


def backend():
    return _BACKEND


def _absorb(e, x, src, p):
    # CBC-MAC: xor src into the state x from byte p of the current block,
    # enciphering each full block; returns the new position.
    for b in src:
        x[p] ^= b
        p += 1
        if p == 16:
            e.encrypt(x, x)
            p = 0
    return p


def _ccm(key, nonce, data, aad, m, n, enc):
    # data: the input (n bytes of it are the message); returns the n-byte
    # output and the CBC-MAC tag block (encrypted with S0), both bytearrays.
    if len(key) != 16:
        raise ValueError("ccm: key must be 16 bytes")
    q = 15 - len(nonce)
    if not 2 <= q <= 8:
        raise ValueError("ccm: nonce must be 7 to 13 bytes")
    if m < 4 or m > 16 or m & 1:
        raise ValueError("ccm: tag_len must be 4, 6, ..., 16")
    la = len(aad)
    if n > MAX_MSG or la > MAX_AAD or (q == 2 and n > 65535):
        raise ValueError("ccm: input too long")
    e = (_aes or _PyAES)(key, 1)
    # the counter blocks A_i = flags(q - 1) | nonce | i; i < 4097 fits two bytes
    a = bytearray(16)
    a[0] = q - 1
    a[1:16 - q] = nonce
    s = bytearray(16)
    out = bytearray(n)
    for j in range(0, n, 16):
        i = (j >> 4) + 1
        a[14] = i >> 8
        a[15] = i & 255
        e.encrypt(a, s)
        for k in range(min(16, n - j)):
            out[j + k] = data[j + k] ^ s[k]
    # B0 = flags | nonce | l(m)
    x = bytearray(16)
    x[0] = (64 if la else 0) | ((m - 2) << 2) | (q - 1)
    x[1:16 - q] = nonce
    x[14] = n >> 8
    x[15] = n & 255
    e.encrypt(x, x)
    if la:
        if la < 0xFF00:
            p = _absorb(e, x, (la >> 8, la & 255), 0)
        else:
            p = _absorb(e, x, (0xFF, 0xFE, la >> 24, (la >> 16) & 255, (la >> 8) & 255, la & 255), 0)
        if _absorb(e, x, aad, p):
            e.encrypt(x, x)
    if _absorb(e, x, data if enc else out, 0):
        e.encrypt(x, x)
    a[14] = a[15] = 0
    e.encrypt(a, s)
    for k in range(16):
        x[k] ^= s[k]
    return out, x


def ccm_encrypt(key, nonce, plaintext, aad=b"", tag_len=8):
    n = len(plaintext)
    if n > MAX_MSG:
        raise ValueError("ccm: input too long")
    out, t = _ccm(key, nonce, plaintext, aad, tag_len, n, True)
    out.extend(memoryview(t)[:tag_len])
    return bytes(out)


def ccm_decrypt(key, nonce, data, aad=b"", tag_len=8):
    n = len(data) - tag_len
    if n < 0 or n > MAX_MSG:
        raise ValueError("ccm: bad length")
    out, t = _ccm(key, nonce, data, aad, tag_len, n, False)
    d = 0
    for k in range(tag_len):  # constant time: every byte is compared
        d |= t[k] ^ data[n + k]
    if d:
        for k in range(n):  # release nothing of an unauthenticated message
            out[k] = 0
        raise ValueError("ccm: authentication failed")
    return bytes(out)
