# ucrumb.verify: verify crumb tokens on the device itself, offline, before an
# actuator acts on a command (PROTOCOL.md §7.1). Runs unmodified on
# MicroPython and CPython; not in a board's bundle unless the board asks for
# the "verify" feature (firmware/boards/*.toml), and imported only by the code
# that verifies.
#
# The checks and their order are host/crumb/verify.py's, so that the device
# and a service give the same verdict and the same stable code (host/crumb/
# errors.py) on every token: tests/device/test_device_verify.py holds them to
# it on the shared vectors and on random valid and mutated tokens. What the
# device does not check: revocation (it has no list) and tokens as base64url
# text (it takes bytes).
#
# Time is the device clock synced from the issuer (ucrumb.client.Client.now,
# 0 before the first answer): an unsynced device cannot judge expiry nor the
# replay floor below, so it refuses everything with store_unavailable.
#
# Single use: a replay set of at most max_entries (cti, hop) entries in RAM,
# and a floor: every token with iat <= floor is refused (replayed). The floor
# starts at the issuer time this verifier was created at (a boot: known at the
# first synced verify, as the synced time less the ticks since) plus the
# leeway, so after a reboot no token issued before it can be presented again
# (the previous set is gone). When the set is full, entries of expired tokens go first; if
# none, the entries with the oldest iat go and the floor rises to that iat, so
# an evicted token is refused for good rather than re-admitted. A token older
# than every entry of a full set is refused (store_unavailable) instead.
from ucrumb import cbor, ed25519

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython: ucrumb.http's fallback (not imported on a board: 10 KB of RAM)
    from ucrumb.http import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from hashlib import sha256
except ImportError:  # pragma: no cover - every MicroPython port has sha256
    sha256 = None

# Wire constants: literal copies of host/crumb/wire.py's (MicroPython inlines
# const()); tests/device/test_device_wire.py checks each one.
_FORMAT_VERSION = const(2)
_ALG_EDDSA = const(-8)
_COSE_ALG = const(1)
_COSE_KID = const(4)
_KID_BYTES = const(4)
_PUBLIC_KEY_BYTES = const(32)
_SIGNATURE_BYTES = const(64)
_MAX_TOKEN_BYTES = const(4096)
_MAX_DEPTH = const(6)
_MAX_ITEMS = const(32)
_MAX_STRING = const(255)
_MAX_BLOCKS = const(16)
_MAX_CAVEATS = const(16)
_MAX_USES = const(0xFFFFFFFF)
_CLAIM_ISS = const(1)
_CLAIM_SUB = const(2)
_CLAIM_AUD = const(3)
_CLAIM_EXP = const(4)
_CLAIM_NBF = const(5)
_CLAIM_IAT = const(6)
_CLAIM_CTI = const(7)
_CLAIM_CNF = const(8)  # a proof-of-possession token's key, encrypted to its first hop (PROTOCOL.md §4.4)
_CLAIM_SCOPE = const(9)
_CLAIM_CRUMB = const(-65537)
_EXT_USES = const(1)
_EXT_CHAIN = const(2)
_EXT_ATTENUATORS = const(3)
_EXT_CAVEATS = const(4)
_EXT_OPEN = const(5)
_BLOCK_ATTEST = const(1)
_BLOCK_ATTENUATE = const(2)
_BLOCK_OPEN = const(3)
_PRED_EQ = const(1)
_PRED_NE = const(2)
_PRED_IN = const(3)
_PRED_PREFIX = const(4)
_PRED_LT = const(5)
_PRED_LE = const(6)
_PRED_GT = const(7)
_PRED_GE = const(8)
_FIELD_RESOURCE = const(0)
_FIELD_OPERATION = const(1)
_FIELD_TIME = const(2)
_FIELD_HOP = const(3)
_FIELD_AUDIENCE = const(4)
_FIELD_SUBJECT = const(5)
_ALL_METHODS = const(127)
_LEEWAY = const(5)

_SEAL_CONTEXT = b"crumb seal v1"
_BLOCK_PROTECTED = b"\xa1\x01\x27"  # {1: -8}
_SIG1 = b"\x84\x6aSignature1"
_METHODS = {"GET": 1, "POST": 2, "PUT": 4, "DELETE": 8, "FETCH": 16, "PATCH": 32, "IPATCH": 64}
_CLAIMS = (_CLAIM_ISS, _CLAIM_SUB, _CLAIM_AUD, _CLAIM_EXP, _CLAIM_NBF, _CLAIM_IAT, _CLAIM_CTI,
           _CLAIM_CNF, _CLAIM_SCOPE, _CLAIM_CRUMB)

# The stable codes this verifier gives: host/crumb/errors.py's, same strings.
MALFORMED = "malformed"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
SCOPE_DENIED = "scope_denied"
CAVEAT_FAILED = "caveat_failed"
UNKNOWN_CAVEAT = "unknown_caveat"
REPLAYED = "replayed"
CHAIN_INCOMPLETE = "chain_incomplete"
CHAIN_INVALID = "chain_invalid"
TOO_LARGE = "too_large"
STORE_UNAVAILABLE = "store_unavailable"
POP_FAILED = "pop_failed"


class Refused(Exception):
    """A token was refused: ``.code`` is the stable code, ``.message`` says why."""

    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def _bad(message):
    return Refused(MALFORMED, message)


def kid_of(public):
    """A key's kid: the first 4 bytes of its SHA-256 (as the host's crumb.keys)."""
    return sha256(public).digest()[:_KID_BYTES]


# -- strict CBOR, with the host's per-container bounds ----------------------


def _loads(data, depth=_MAX_DEPTH, items=_MAX_ITEMS):
    # ucrumb.cbor bounds the items of the whole input; the host bounds each
    # container: the walk applies the host's bound on top (both: malformed).
    try:
        v = cbor.loads(data, depth, _MAX_TOKEN_BYTES, _MAX_STRING)
    except cbor.CBORError as e:
        raise _bad("CBOR: %s" % e)
    _walk(v, items)
    return v


def _walk(v, items):
    if isinstance(v, (list, dict)):
        if len(v) > items:
            raise _bad("over %d items" % items)
        for x in (v.values() if isinstance(v, dict) else v):
            _walk(x, items)


def _head(data, i):
    # One strict head: (major type, argument, next offset), as host cbor.head.
    n = len(data)
    if i >= n:
        raise _bad("truncated at offset %d" % i)
    ib = data[i]
    mt = ib >> 5
    ai = ib & 31
    if ai < 24:
        return mt, ai, i + 1
    if ai > 27:
        raise _bad("bad head at %d" % i)
    w = 1 << (ai - 24)
    end = i + 1 + w
    if end > n:
        raise _bad("truncated at offset %d" % i)
    arg = int.from_bytes(data[i + 1:end], "big")
    if arg < (24 if w == 1 else 1 << (4 * w)):
        raise _bad("non-preferred at %d" % i)
    return mt, arg, end


def _bstr(data, i, what):
    mt, length, start = _head(data, i)
    if mt != 2:
        raise _bad(what + " is a byte string")
    end = start + length
    if end > len(data):
        raise _bad("truncated " + what)
    return data[start:end], end


def _bstr_head(n):
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    return b"\x59" + n.to_bytes(2, "big")


def _sig_structure(protected, aad, payload):
    # COSE Sig_structure (RFC 9052 §4.4): ["Signature1", protected, external_aad, payload]
    return b"".join((_SIG1, _bstr_head(len(protected)), protected, _bstr_head(len(aad)), aad,
                     _bstr_head(len(payload)), payload))


def split(data):
    """The token's blocks: ([(protected, payload, signature), ...], proof or None)."""
    n = len(data)
    if n > _MAX_TOKEN_BYTES:
        raise Refused(TOO_LARGE, "%d bytes > %d" % (n, _MAX_TOKEN_BYTES))
    mt, count, i = _head(data, 0)
    if mt != 4 or count < 2:
        raise _bad("not a token array")
    mt, version, i = _head(data, i)
    if mt != 0:
        raise _bad("bad version")
    if version != _FORMAT_VERSION:
        raise Refused(UNSUPPORTED_VERSION, "token format %d" % version)
    if count > _MAX_BLOCKS + 2:
        raise Refused(TOO_LARGE, "too many blocks")
    blocks = []
    proof = None
    for k in range(count - 1):
        if i >= n:
            raise _bad("truncated at offset %d" % i)
        if data[i] != 0x84:
            if k == count - 2 and k > 0 and data[i] >> 5 == 2:
                proof, i = _bstr(data, i, "the proof")
                if len(proof) not in (32, _SIGNATURE_BYTES):
                    raise _bad("bad proof size")
                break
            raise _bad("not a block at %d" % i)
        protected, i = _bstr(data, i + 1, "a protected header")
        if i >= n or data[i] != 0xA0:
            raise _bad("bad unprotected header")
        payload, i = _bstr(data, i + 1, "a payload")
        signature, i = _bstr(data, i, "a signature")
        if len(signature) != _SIGNATURE_BYTES:
            raise _bad("bad signature size")
        blocks.append((protected, payload, signature))
    if i != n:
        raise _bad("%d trailing bytes" % (n - i))
    return blocks, proof


# -- claims ------------------------------------------------------------------


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v, what):
    if type(v) is not str or not v or len(v.encode()) > _MAX_STRING:
        raise _bad(what + ": bad text")
    return v


def _uint(v, what):
    if not _int(v) or v < 0:
        raise _bad(what + " is an unsigned integer")
    return v


def _parties(v, what):
    if not isinstance(v, list) or not v or len(v) > _MAX_ITEMS:
        raise _bad(what + ": bad list")
    out = []
    names = []
    for e in v:
        if not isinstance(e, list) or len(e) != 2:
            raise _bad("bad %s entry" % what)
        name = _text(e[0], "a %s name" % what)
        ref = e[1]
        if not isinstance(ref, bytes) or len(ref) not in (_PUBLIC_KEY_BYTES, _KID_BYTES):
            raise _bad("bad key of %r" % name)
        if name in names:
            raise _bad("%s %r twice" % (what, name))
        names.append(name)
        out.append((name, ref))
    return out


def _check_caveat(c):
    if not isinstance(c, list) or len(c) != 3:
        raise _bad("bad caveat")
    pred, field, value = c
    if not _int(pred):
        raise _bad("bad predicate")
    if not _PRED_EQ <= pred <= _PRED_GE:
        raise Refused(UNKNOWN_CAVEAT, "predicate %d" % pred)
    if _int(field):
        if not _FIELD_RESOURCE <= field <= _FIELD_SUBJECT:
            raise Refused(UNKNOWN_CAVEAT, "field %d" % field)
    elif type(field) is str:
        if not field or len(field.encode()) > _MAX_STRING or field in (
                "resource", "operation", "time", "hop", "audience", "subject"):
            raise _bad("bad fact name %r" % field)
    else:
        raise _bad("bad caveat field")
    if pred == _PRED_IN:
        if not isinstance(value, list) or not value or len(value) > _MAX_ITEMS:
            raise _bad("'in' takes a non-empty array")
        for x in value:
            if not (_int(x) or type(x) in (str, bytes)):
                raise _bad("bad caveat value")
    elif pred == _PRED_PREFIX:
        if type(value) not in (str, bytes):
            raise _bad("'prefix' takes text or bytes")
    elif pred == _PRED_EQ or pred == _PRED_NE:
        if not (_int(value) or type(value) in (str, bytes)):
            raise _bad("bad caveat value")
    elif not _int(value):
        raise _bad("bad caveat value")


def _caveats(v):
    if not isinstance(v, list) or len(v) > _MAX_CAVEATS:
        raise _bad("bad caveats")
    for c in v:
        _check_caveat(c)
    return v


def _permission(p):
    t = type(p)
    if t is str:
        return _text(p, "an operation")
    if t is int:
        if p <= 0 or p & ~_ALL_METHODS:
            raise _bad("bad bitmask %d" % p)
        return p
    if t is list:
        if len(p) < 2:
            raise _bad("bad permission")
        for op in p:
            _text(op, "an operation")
        for j in range(len(p)):
            if p[j] in p[j + 1:]:
                raise _bad("bad permission")
        return p
    raise _bad("bad permission")


def _scope(v):
    if type(v) is not bytes:
        raise _bad("scope not bytes")
    s = _loads(v, 3)
    if not isinstance(s, list) or not s:
        raise _bad("bad scope")
    for e in s:
        if not isinstance(e, list) or len(e) != 2:
            raise _bad("bad scope entry")
        r = _text(e[0], "a resource")
        star = r.find("*")
        if star != -1 and star != len(r) - 1:
            raise _bad("'*' not at the end")
        _permission(e[1])
    return s


def _cnf_shape(p, u, ct, rs):
    # host crumb.pop.check_cnf, every check malformed: [h'a1010a', {5: 13-byte nonce}, ciphertext longer
    # than the 8-byte tag, [[h'a1013818', {-1: {1: 1, -1: 4, -2: 32 bytes}}, h'']]]
    if (p != b"\xa1\x01\x0a" or not isinstance(u, dict) or list(u) != [5] or not isinstance(u[5], bytes)
            or len(u[5]) != 13 or not isinstance(ct, bytes) or len(ct) <= 8 or not isinstance(rs, list)
            or len(rs) != 1):
        return False
    r = rs[0]
    if not isinstance(r, list) or len(r) != 3 or r[0] != b"\xa1\x01\x38\x18" or r[2] != b"":
        return False
    r = r[1]
    if not isinstance(r, dict) or list(r) != [-1]:
        return False
    k = r[-1]
    return (isinstance(k, dict) and len(k) == 3 and 1 in k and -1 in k and -2 in k and k[1] == 1 and k[-1] == 4
            and isinstance(k[-2], bytes) and len(k[-2]) == 32)


class Claims:
    """The validated claims of a token's authority block (as host crumb.claims.Claims).

    ``chain`` and ``attenuators`` are lists of (name, key or kid).
    """

    def __init__(self, payload):
        m = _loads(payload, _MAX_DEPTH + 1)  # cnf's ephemeral key sits one level deeper (PROTOCOL.md §4.4)
        if not isinstance(m, dict):
            raise _bad("claims not a map")
        unknown = [k for k in m if k not in _CLAIMS]
        if unknown:
            raise Refused(UNKNOWN_CAVEAT, "claim %r" % unknown[0])
        for k in (_CLAIM_EXP, _CLAIM_IAT, _CLAIM_CTI, _CLAIM_SCOPE):
            if k not in m:
                raise _bad("claim %d missing" % k)
        cti = m[_CLAIM_CTI]
        if not isinstance(cti, bytes) or not 1 <= len(cti) <= 32:
            raise _bad("bad cti")
        self.cti = cti
        self.exp = _uint(m[_CLAIM_EXP], "exp")
        self.iat = _uint(m[_CLAIM_IAT], "iat")
        self.scope = _scope(m[_CLAIM_SCOPE])
        self.iss = self.sub = self.aud = self.nbf = self.open_key = None
        self.uses = 1
        self.chain = []
        self.attenuators = []
        self.caveats = []
        if _CLAIM_ISS in m:
            self.iss = _text(m[_CLAIM_ISS], "iss")
        if _CLAIM_SUB in m:
            self.sub = _text(m[_CLAIM_SUB], "sub")
        if _CLAIM_AUD in m:
            self.aud = _text(m[_CLAIM_AUD], "aud")
        if _CLAIM_NBF in m:
            self.nbf = _uint(m[_CLAIM_NBF], "nbf")
        if _CLAIM_CRUMB in m:
            self._ext(m[_CLAIM_CRUMB])
        self.pop = _CLAIM_CNF in m
        if self.pop:  # a device can never read it (no X25519 here), but its shape is checked as the host's
            v = m[_CLAIM_CNF]
            if not isinstance(v, dict) or not v:
                raise _bad("cnf not a map")
            if list(v) != [2]:
                raise Refused(UNKNOWN_CAVEAT, "cnf method")
            if not isinstance(v[2], list) or len(v[2]) != 4 or not _cnf_shape(*v[2]):
                raise _bad("cnf not a COSE_Encrypt of §4.4")

    def _ext(self, ext):
        if not isinstance(ext, dict) or not ext:
            raise _bad("bad crumb claim")
        for k in ext:
            if k not in (_EXT_USES, _EXT_CHAIN, _EXT_ATTENUATORS, _EXT_CAVEATS, _EXT_OPEN):
                raise Refused(UNKNOWN_CAVEAT, "extension %r" % k)
        if _EXT_USES in ext:
            uses = _uint(ext[_EXT_USES], "uses")
            if not 2 <= uses <= _MAX_USES:
                raise _bad("bad uses")
            self.uses = uses
        if _EXT_CHAIN in ext:
            self.chain = _parties(ext[_EXT_CHAIN], "chain")
        if _EXT_ATTENUATORS in ext:
            self.attenuators = _parties(ext[_EXT_ATTENUATORS], "attenuator")
        if _EXT_CAVEATS in ext:
            self.caveats = _caveats(ext[_EXT_CAVEATS])
            if not self.caveats:
                raise _bad("empty caveats")
        if _EXT_OPEN in ext:
            k = ext[_EXT_OPEN]
            if not isinstance(k, bytes) or len(k) != _PUBLIC_KEY_BYTES:
                raise _bad("bad open key")
            self.open_key = k


# -- request checks ------------------------------------------------------------


def noncanonical(resource):
    """True when ``resource`` is not in canonical form (PROTOCOL.md §4.2): '%',
    a backslash, a control character, a '.' or '..' segment (also with ';'
    parameters), or an empty segment ('//', or a '/' ending anything but "/")."""
    for ch in resource:
        if ch in "%\\\x7f" or ch < " ":
            return True
    segs = resource.split("/")
    for j in range(len(segs)):
        s = segs[j]
        if not s:
            if j and resource != "/":
                return True
        elif s.split(";", 1)[0] in (".", ".."):
            return True
    return False


def _permits(scope, resource, operation):
    for pattern, perm in scope:
        if pattern[-1] == "*":
            if not resource.startswith(pattern[:-1]):
                continue
        elif pattern != resource:
            continue
        t = type(perm)
        if t is str:
            if perm == operation:
                return True
        elif t is int:
            bit = _METHODS.get(operation.upper())
            if bit is not None and perm & bit:
                return True
        elif operation in perm:
            return True
    return False


def _holds(c, values, facts):
    pred, field, want = c
    have = facts.get(field) if type(field) is str else values[field]
    if have is None or isinstance(have, bool):
        return False
    if pred == _PRED_EQ:
        return type(have) is type(want) and have == want
    if pred == _PRED_NE:
        return type(have) is type(want) and have != want
    if pred == _PRED_IN:
        for w in want:
            if type(have) is type(w) and have == w:
                return True
        return False
    if pred == _PRED_PREFIX:
        return type(have) is type(want) and have.startswith(want)
    if not isinstance(have, int):
        return False
    if pred == _PRED_LT:
        return have < want
    if pred == _PRED_LE:
        return have <= want
    if pred == _PRED_GT:
        return have > want
    return have >= want


# -- the verifier ---------------------------------------------------------------


class Verifier:
    """Verifies tokens for this device (PROTOCOL.md §7.1).

    Args:
        keys: the pinned issuer public keys (32 bytes each); their kids are
            computed here.
        audience: this device's audience name (its device id): a token with
            ``aud`` must name it.
        clock: unix seconds synced from the issuer, 0 when not synced
            (``Client.now``).
        node_keys: public keys of hops and attenuators, to resolve the kids a
            token may name them by.
        leeway: seconds of clock difference allowed on exp, nbf and iat.
        hop: this device's name in declared chains (None: final destination).
        max_entries: the replay set's size.
        fence: False only for tests that replay fixed vectors: no floor at start.
    """

    def __init__(self, keys, audience, clock, node_keys=(), leeway=_LEEWAY, hop=None, max_entries=32,
                 fence=True):
        self._keys = {}
        for k in keys:
            if len(k) != _PUBLIC_KEY_BYTES:
                raise ValueError("an Ed25519 public key is 32 bytes")
            kid = kid_of(k)
            if self._keys.get(kid, k) != k:
                raise ValueError("two different keys share a kid")
            self._keys[kid] = bytes(k)
        self._nodes = {}
        for k in node_keys:
            self._nodes[kid_of(k)] = bytes(k)
        if leeway < 0 or max_entries < 1:
            raise ValueError("leeway >= 0 and max_entries >= 1")
        self.audience = audience
        self.clock = clock
        self.leeway = leeway
        self.hop = hop
        self.max_entries = max_entries
        self._seen = {}  # (cti, hop) -> [uses left, iat, exp]
        self._floor = None if fence else -1  # refuse iat <= floor; None: set at the first synced time
        self._born = ticks_ms()

    def verify(self, token, resource, operation, facts=None, hop=None):
        """Check ``token`` (bytes) for one request and spend one of its uses.

        Returns the token's Claims; raises Refused with a stable ``.code``.
        """
        if not isinstance(token, (bytes, bytearray)):
            raise _bad("token not bytes")
        token = bytes(token)
        hop = self.hop if hop is None else hop
        now = self.clock()
        if not now:
            raise Refused(STORE_UNAVAILABLE, "clock not synced")
        if self._floor is None:
            # the issuer time when this verifier started (a boot): now less the ticks since. A
            # wrapped ticks counter (days unsynced) only makes it later: more refused, never fewer.
            self._floor = now - max(0, ticks_diff(ticks_ms(), self._born)) // 1000 + self.leeway
        blocks, proof = split(token)
        protected, payload, signature = blocks[0]
        key = self._keys.get(self._authority_kid(protected))
        if key is None:
            raise Refused(UNKNOWN_KEY, "unknown issuer kid")
        if not ed25519.verify(key, _sig_structure(protected, b"", payload), signature):
            raise Refused(BAD_SIGNATURE, "authority signature")
        c = Claims(payload)
        lw = self.leeway
        if c.exp + lw <= now:
            raise Refused(EXPIRED, "exp %d, now %d" % (c.exp, now))
        if c.nbf is not None and c.nbf - lw > now:
            raise Refused(NOT_YET_VALID, "nbf %d, now %d" % (c.nbf, now))
        if c.iat - lw > now:
            raise Refused(NOT_YET_VALID, "iat %d > now %d" % (c.iat, now))
        attested = 0
        extra = []
        if len(blocks) > 1 or proof is not None or c.attenuators:
            attested, extra = self._blocks(blocks, proof, c)
        if c.open_key is not None and proof is None:
            raise _bad("proof missing")
        if c.pop and not attested:
            # a PoP token's first hop reads its key and checks the call's proof: not a device
            raise Refused(POP_FAILED, "a proof-of-possession token needs its first hop")
        if c.chain:
            self._position(c, attested, hop)
        # the request: audience, canonical resource, scope, caveats
        if c.aud is not None and c.aud != self.audience:
            raise Refused(SCOPE_DENIED, "aud %r" % c.aud)
        if noncanonical(resource):
            raise Refused(SCOPE_DENIED, "%r not canonical" % resource)
        if not _permits(c.scope, resource, operation):
            raise Refused(SCOPE_DENIED, "%r on %r not granted" % (operation, resource))
        if c.caveats or extra:
            values = (resource, operation, now, hop, self.audience, c.sub)
            facts = facts or {}
            for cv in c.caveats + extra:
                if not _holds(cv, values, facts):
                    raise Refused(CAVEAT_FAILED, "%r" % (cv,))
        self._spend(c, hop or "", now)
        return c

    def _authority_kid(self, protected):
        h = _loads(protected, 1, 4)
        if not isinstance(h, dict):
            raise _bad("header not a map")
        if h.get(_COSE_ALG) != _ALG_EDDSA:
            raise Refused(BAD_SIGNATURE, "algorithm %r" % (h.get(_COSE_ALG),))
        kid = h.get(_COSE_KID)
        if len(h) != 2 or not isinstance(kid, bytes) or len(kid) != _KID_BYTES:
            raise _bad("bad authority header")
        return kid

    def _party_key(self, party):
        ref = party[1]
        if len(ref) == _PUBLIC_KEY_BYTES:
            return ref
        k = self._nodes.get(ref)
        if k is None:
            raise Refused(UNKNOWN_KEY, "unknown key of %r" % party[0])
        return k

    def _blocks(self, blocks, proof, c):
        # Appended blocks and the proof, as host Verifier._check_blocks.
        prev = blocks[0][2]
        attested = 0
        seen = []
        extra = []
        open_key = c.open_key
        open_sig = prev
        for protected, payload, signature in blocks[1:]:
            if protected != _BLOCK_PROTECTED:
                h = _loads(protected, 1, 4)
                if isinstance(h, dict) and h.get(_COSE_ALG, _ALG_EDDSA) != _ALG_EDDSA:
                    raise Refused(BAD_SIGNATURE, "algorithm %r" % (h.get(_COSE_ALG),))
                raise _bad("bad block header")
            body = _loads(payload, 5)
            if not isinstance(body, list) or not body or not isinstance(body[0], int):
                raise _bad("a block payload is [kind, ...]")
            kind = body[0]
            signed = _sig_structure(protected, prev, payload)
            if kind == _BLOCK_ATTEST:
                if len(body) != 2 or not _int(body[1]):
                    raise _bad("bad attestation")
                j = body[1]
                if not 0 <= j < len(c.chain):
                    raise Refused(CHAIN_INVALID, "undeclared hop")
                if j != attested:
                    raise Refused(CHAIN_INVALID, "attestation out of order")
                if not ed25519.verify(self._party_key(c.chain[j]), signed, signature):
                    raise Refused(CHAIN_INVALID, "bad attestation by %r" % c.chain[j][0])
                attested += 1
            elif kind == _BLOCK_ATTENUATE:
                if len(body) != 3 or not _int(body[1]) or not 0 <= body[1] < len(c.attenuators):
                    raise Refused(CHAIN_INVALID, "undeclared attenuator")
                if body[1] in seen:
                    raise Refused(CHAIN_INVALID, "attenuated twice")
                party = c.attenuators[body[1]]
                if not ed25519.verify(self._party_key(party), signed, signature):
                    raise Refused(BAD_SIGNATURE, "bad attenuation by %r" % party[0])
                seen.append(body[1])
                extra.extend(_caveats(body[2]))
            elif kind == _BLOCK_OPEN:
                if open_key is None:
                    raise Refused(CHAIN_INVALID, "not an open token")
                if len(body) != 3 or not isinstance(body[2], bytes) or len(body[2]) != _PUBLIC_KEY_BYTES:
                    raise _bad("bad open attenuation")
                if not ed25519.verify(open_key, signed, signature):
                    raise Refused(BAD_SIGNATURE, "bad open attenuation signature")
                extra.extend(_caveats(body[1]))
                open_key = body[2]
                open_sig = signature
            else:
                raise Refused(UNKNOWN_CAVEAT, "block kind %r" % (kind,))
            prev = signature
        if len(seen) != len(c.attenuators):
            raise Refused(CHAIN_INCOMPLETE, "attenuation missing")
        if proof is not None:
            if open_key is None:
                raise _bad("proof on a closed token")
            if len(proof) == 32:
                if ed25519.public_key(proof) != open_key:
                    raise Refused(BAD_SIGNATURE, "bad proof")
            elif not ed25519.verify(open_key, _SEAL_CONTEXT + open_sig, proof):
                raise Refused(BAD_SIGNATURE, "bad seal")
        return attested, extra

    def _position(self, c, attested, hop):
        chain = c.chain
        if hop is None:
            if attested < len(chain):
                raise Refused(CHAIN_INCOMPLETE, "%r not attested" % chain[attested][0])
            return
        index = None
        for j in range(len(chain)):
            if chain[j][0] == hop:
                index = j
                break
        if index is None:
            raise Refused(CHAIN_INVALID, "%r is not a hop" % hop)
        if attested < index:
            raise Refused(CHAIN_INCOMPLETE, "%r not attested" % chain[attested][0])
        if attested > index:
            raise Refused(CHAIN_INVALID, "already past %r" % hop)

    # -- the replay set -----------------------------------------------------------

    def _spend(self, c, hop, now):
        if c.iat <= self._floor:
            raise Refused(REPLAYED, "iat at or below the replay floor")
        key = (c.cti, hop)
        e = self._seen.get(key)
        if e is not None:
            if e[0] <= 0:
                raise Refused(REPLAYED, "%d use(s) spent" % c.uses)
            e[0] -= 1
            return
        if len(self._seen) >= self.max_entries:
            self._make_room(c.iat, now)
        self._seen[key] = [c.uses - 1, c.iat, c.exp]

    def _make_room(self, iat, now):
        seen = self._seen
        lw = self.leeway
        for k in [k for k, e in seen.items() if e[2] + lw <= now]:
            del seen[k]  # expired: refused as such from now on, whatever the set says
        if len(seen) < self.max_entries:
            return
        oldest = min(e[1] for e in seen.values())
        if iat <= oldest:
            raise Refused(STORE_UNAVAILABLE, "replay set full")
        self._floor = max(self._floor, oldest)
        for k in [k for k, e in seen.items() if e[1] <= oldest]:
            del seen[k]
