# Ed25519 signature verification (RFC 8032 §5.1.7) and public-key derivation
# (§5.1.5) for ucrumb.verify, in plain Python ints: no MicroPython port ships
# Ed25519 (docs/device.md, "Native fast path"). Runs on MicroPython and CPython.
#
# Acceptance is libsodium's (crypto_sign_verify_detached without
# ED25519_COMPAT), which is what pynacl and so the host verifier use, so that a
# device and a service never disagree on a signature:
#   - S must be canonical (S < L);
#   - R and A must not be one of the small-order encodings libsodium blocks
#     (_SMALL below, sign bit ignored), A must be canonical (y < p) and on the
#     curve;
#   - the check is cofactorless and by bytes: encode([S]B - [k]A) == R, so a
#     non-canonical R never verifies.
# tests/device/test_device_ed25519.py holds this to pynacl on random and
# crafted inputs and to RFC 8032 §7.1's vectors.
#
# Speed: extended twisted Edwards coordinates (Hisil-Wong-Carter-Dawson 2008,
# the formulas of RFC 8032 §5.1.4), one joint double-and-add over both scalars
# in width-w NAF (Straus/Shamir): about 253 doublings and 90 additions, each a
# handful of big-int multiplications reduced mod p. The odd multiples of B are
# computed once, on first use, in affine "Niels" form (y+x, y-x, 2dxy).
#
# Fast paths: hashlib.sha512 when the port has it (else ucrumb.sha512), and
# NATIVE: set ucrumb.ed25519.NATIVE = f(public, message, signature) -> bool to
# use a port's own Ed25519 (a C module); none is standard today.
try:
    from hashlib import sha512 as _h

    def _sha512(m):
        return _h(m).digest()
except ImportError:
    from ucrumb.sha512 import sha512 as _sha512

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
D2 = 2 * D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
_BY = 4 * pow(5, P - 2, P) % P
_W_B = 5  # NAF width for B: odd multiples 1..15 (8 precomputed points)
_W_A = 4  # NAF width for A: odd multiples 1..7 (4 points, computed per verify)
_Y_MASK = (1 << 255) - 1
# The y coordinates of the encodings libsodium's ge25519_has_small_order
# blocks (order 1, 2, 4, 8, and the non-canonical p, p + 1).
_SMALL = (
    0, 1, P - 1, P, P + 1,
    0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
    0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,
)

NATIVE = None
_btab = None


def _decode(s):
    # A point from its 32-byte encoding (RFC 8032 §5.1.3), as extended
    # coordinates (x, y, 1, xy); None when y >= p or no x fits.
    v = int.from_bytes(s, "little")
    y = v & _Y_MASK
    if y >= P:
        return None
    yy = y * y % P
    u = yy - 1
    w = (D * yy + 1) % P
    w3 = w * w * w % P
    x = u * w3 * pow(u * w3 * w3 * w % P, (P - 5) // 8, P) % P
    vx2 = w * x * x % P
    if vx2 != u % P:
        if vx2 != -u % P:
            return None
        x = x * SQRT_M1 % P
    if x & 1 != v >> 255:
        x = P - x if x else x  # x = 0 with the sign bit set: kept (libsodium does)
    return (x, y, 1, x * y % P)


def _encode(X, Y, Z):
    zi = pow(Z, P - 2, P)
    x = X * zi % P
    y = Y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _naf(k, w, n):
    # Width-w NAF digits of k (< 2**n), least significant first, in a
    # bytearray of n + 1 (a digit d is stored as d & 0xFF): 257 bytes, not a
    # list of ints (1-2 KB).
    out = bytearray(n + 1)
    full = 1 << w
    half = full >> 1
    i = 0
    while k:
        if k & 1:
            d = k & (full - 1)
            if d >= half:
                d -= full
            k -= d
            out[i] = d & 0xFF
        k >>= 1
        i += 1
    return out


def _add_ext(X1, Y1, Z1, T1, X2, Y2, Z2, T2):
    # Extended + extended (RFC 8032 §5.1.4), used only to build the tables.
    A = (Y1 - X1) * (Y2 - X2) % P
    B = (Y1 + X1) * (Y2 + X2) % P
    C = T1 * D2 * T2 % P
    Dd = 2 * Z1 * Z2 % P
    E = B - A
    F = Dd - C
    G = Dd + C
    H = B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def _niels_table(pt, n):
    # [pt, 3pt, 5pt, ...] (n points), extended coordinates.
    X, Y, Z, _ = pt
    # 2pt
    A = X * X % P
    Bq = Y * Y % P
    C = 2 * Z * Z % P
    H = A + Bq
    E = H - (X + Y) * (X + Y)
    G = A - Bq
    F = C + G
    d2 = (E * F % P, G * H % P, F * G % P, E * H % P)
    pts = [pt]
    for _ in range(n - 1):
        pts.append(_add_ext(*pts[-1], *d2))
    return pts


def _base_table():
    global _btab
    if _btab is None:
        pts = _niels_table(_decode(_BY.to_bytes(32, "little")), 1 << (_W_B - 2))
        tab = []
        for X, Y, Z, T in pts:
            zi = pow(Z, P - 2, P)
            x = X * zi % P
            y = Y * zi % P
            tab.append(((y + x) % P, (y - x) % P, D2 * x * y % P))
        _btab = tab
    return _btab


def _scalarmult(s, k, A):
    # [s]B + [k]A (A in extended coordinates, or None for [s]B alone), as
    # projective (X, Y, Z). Variable time: only public values go through it.
    # s, k < 2**256 (s < L, k < L, or a clamped secret < 2**255)
    nb = _naf(s, _W_B, 256)
    btab = _base_table()
    na = _naf(k, _W_A, 256)
    atab = []
    if A is not None:
        for X, Y, Z, T in _niels_table(A, 1 << (_W_A - 2)):
            atab.append(((Y + X) % P, (Y - X) % P, 2 * Z % P, D2 * T % P))
    X, Y, Z, T = 0, 1, 1, 0
    started = False
    for i in range(256, -1, -1):
        db = nb[i]
        da = na[i]
        if db > 127:
            db -= 256
        if da > 127:
            da -= 256
        if started:
            # doubling (RFC 8032 §5.1.4); T only when an addition follows
            A_ = X * X % P
            B_ = Y * Y % P
            C_ = 2 * Z * Z
            H = A_ + B_
            E = H - (X + Y) * (X + Y)
            G = A_ - B_
            F = C_ + G
            X = E * F % P
            Y = G * H % P
            Z = F * G % P
            if db or da:
                T = E * H % P
        if db:
            started = True
            if db > 0:
                yp, ym, t2 = btab[db >> 1]
            else:
                ym, yp, t2 = btab[(-db) >> 1]
                t2 = -t2
            A_ = (Y - X) * ym
            B_ = (Y + X) * yp
            C_ = T * t2 % P
            D_ = 2 * Z
            E = B_ - A_
            F = D_ - C_
            G = D_ + C_
            H = B_ + A_
            X = E * F % P
            Y = G * H % P
            Z = F * G % P
            if da:
                T = E * H % P
        if da:
            started = True
            if da > 0:
                yp, ym, z2, t2 = atab[da >> 1]
            else:
                ym, yp, z2, t2 = atab[(-da) >> 1]
                t2 = -t2
            A_ = (Y - X) * ym
            B_ = (Y + X) * yp
            C_ = T * t2 % P
            D_ = Z * z2
            E = B_ - A_
            F = D_ - C_
            G = D_ + C_
            H = B_ + A_
            X = E * F % P
            Y = G * H % P
            Z = F * G % P
    return X, Y, Z


def public_key(seed):
    """The 32-byte public key of a 32-byte secret seed (RFC 8032 §5.1.5)."""
    h = _sha512(seed)
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return _encode(*_scalarmult(a, 0, None))


def verify(public, message, signature):
    """True if ``signature`` (64 bytes) is ``public``'s (32 bytes) over ``message``.

    Never raises for bad input of the right types: wrong lengths are False.
    """
    if len(public) != 32 or len(signature) != 64:
        return False
    if NATIVE is not None:
        return bool(NATIVE(public, message, signature))
    r = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    if int.from_bytes(r, "little") & _Y_MASK in _SMALL or int.from_bytes(public, "little") & _Y_MASK in _SMALL:
        return False
    A = _decode(public)
    if A is None:
        return False
    k = int.from_bytes(_sha512(bytes(r) + bytes(public) + bytes(message)), "little") % L
    # [s]B - [k]A: negate A (x -> -x, t -> -t)
    X, Y, Z, T = A
    return _encode(*_scalarmult(s, k, ((P - X) % P, Y, Z, (P - T) % P))) == bytes(r)
