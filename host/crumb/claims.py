"""The authority block's payload: a CWT claims map (RFC 8392) plus crumb's extension."""

from __future__ import annotations

from typing import Any

from . import caveats as cav
from . import cbor
from .errors import CrumbError, Malformed, UnknownCaveat
from .keys import b64u
from .scope import scope_bytes, scope_from_bytes
from .wire import (
    CLAIM_AUD,
    CLAIM_CNF,
    CLAIM_CRUMB,
    CLAIM_CTI,
    CLAIM_EXP,
    CLAIM_IAT,
    CLAIM_ISS,
    CLAIM_NBF,
    CLAIM_SCOPE,
    CLAIM_SUB,
    EXT_ATTENUATORS,
    EXT_CAVEATS,
    EXT_CHAIN,
    EXT_OPEN,
    EXT_USES,
    KID_BYTES,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_STRING,
    MAX_USES,
    PUBLIC_KEY_BYTES,
)

_KNOWN_CLAIMS = {CLAIM_ISS, CLAIM_SUB, CLAIM_AUD, CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_CTI,
                 CLAIM_CNF, CLAIM_SCOPE, CLAIM_CRUMB}

#: Nesting depth a claims payload is decoded with: §2's limit plus one, for the one place
#: that needs it, the ephemeral COSE_Key inside cnf's recipient (PROTOCOL.md §4.4). Every
#: other claim has a fixed shape that Claims.parse checks, shallower than MAX_DEPTH.
CLAIMS_DEPTH = MAX_DEPTH + 1


def loads_claims(payload: bytes) -> Any:
    """The claims payload as CBOR (strict, §2), with the depth a cnf claim needs."""
    return cbor.loads(payload, max_depth=CLAIMS_DEPTH)
_KNOWN_EXT = {EXT_USES, EXT_CHAIN, EXT_ATTENUATORS, EXT_CAVEATS, EXT_OPEN}


class Party:
    """A declared hop or attenuator: a name and a key reference.

    ``keyref`` is the 32-byte Ed25519 public key itself (self-contained) or a
    4-byte kid the verifier resolves among the node keys it was given.
    """

    __slots__ = ("keyref", "name")

    def __init__(self, name: str, keyref: bytes) -> None:
        self.name = name
        self.keyref = keyref

    def __repr__(self) -> str:
        return f"Party({self.name!r}, {self.keyref.hex()})"

    def to_json(self) -> dict:
        kind = "key" if len(self.keyref) == PUBLIC_KEY_BYTES else "kid"
        return {"name": self.name, kind: b64u(self.keyref) if kind == "key" else self.keyref.hex()}


def _text(value: object, what: str) -> str:
    # UTF-8 is at most 4 bytes a character: short text needs no encoding to measure.
    if (type(value) is not str or not value
            or (len(value) > MAX_STRING // 4 and len(value.encode()) > MAX_STRING)):
        raise Malformed(f"{what} is non-empty text of at most {MAX_STRING} bytes")
    return value


def _uint(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Malformed(f"{what} is an unsigned integer")
    return value


def _parties(value: object, what: str) -> list[Party]:
    if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
        raise Malformed(f"{what} is a non-empty array of [name, key]")
    out, names = [], set()
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise Malformed(f"a {what} entry is [name, key]")
        name = _text(entry[0], f"a {what} name")
        keyref = entry[1]
        if not isinstance(keyref, bytes) or len(keyref) not in (PUBLIC_KEY_BYTES, KID_BYTES):
            raise Malformed(f"{what} {name!r}: key is a 32-byte public key or a 4-byte kid")
        if name in names:
            raise Malformed(f"{what} name {name!r} is declared twice")
        names.add(name)
        out.append(Party(name, keyref))
    return out


class Claims:
    """Validated claims of an authority block."""

    __slots__ = (
        "attenuators",
        "aud",
        "caveats",
        "chain",
        "cnf",
        "cti",
        "exp",
        "iat",
        "iss",
        "nbf",
        "open_key",
        "scope",
        "sub",
        "uses",
    )

    def __init__(self, *, exp: int, iat: int, cti: bytes, scope: list, iss: str | None = None,
                 sub: str | None = None, aud: str | None = None, nbf: int | None = None,
                 uses: int = 1, chain: list[Party] | None = None,
                 attenuators: list[Party] | None = None, caveats: list | None = None,
                 open_key: bytes | None = None) -> None:
        self.iss, self.sub, self.aud = iss, sub, aud
        self.exp, self.nbf, self.iat, self.cti = exp, nbf, iat, cti
        self.scope = scope
        self.uses = uses
        self.chain = chain or []
        self.attenuators = attenuators or []
        self.caveats = caveats or []
        self.open_key = open_key
        self.cnf: dict | None = None  # RFC 8747 cnf (§4.4): the PoP key, encrypted to the first hop

    @classmethod
    def parse(cls, m: object) -> Claims:
        if not isinstance(m, dict):
            raise Malformed("the authority payload is a CWT claims map")
        unknown = m.keys() - _KNOWN_CLAIMS
        if unknown:
            raise UnknownCaveat(f"claim {min(unknown, key=str)!r} is not understood")
        try:
            exp, iat, cti, scope = m[CLAIM_EXP], m[CLAIM_IAT], m[CLAIM_CTI], m[CLAIM_SCOPE]
        except KeyError as e:
            raise Malformed(f"required claim {e.args[0]} is missing") from None
        if not isinstance(cti, bytes) or not 1 <= len(cti) <= 32:
            raise Malformed("cti is 1 to 32 bytes")
        c = cls(exp=_uint(exp, "exp"), iat=_uint(iat, "iat"), cti=cti, scope=scope_from_bytes(scope))
        if CLAIM_ISS in m:
            c.iss = _text(m[CLAIM_ISS], "iss")
        if CLAIM_SUB in m:
            c.sub = _text(m[CLAIM_SUB], "sub")
        if CLAIM_AUD in m:
            c.aud = _text(m[CLAIM_AUD], "aud")
        if CLAIM_NBF in m:
            c.nbf = _uint(m[CLAIM_NBF], "nbf")
        if CLAIM_CRUMB in m:
            c._parse_ext(m[CLAIM_CRUMB])
        if CLAIM_CNF in m:
            from .pop import check_cnf  # only PoP tokens pay for the import
            c.cnf = check_cnf(m[CLAIM_CNF])
        return c

    @classmethod
    def decode(cls, payload: bytes) -> Claims:
        """Decode and validate a claims payload (strict, as ``parse(cbor.loads(payload))``)."""
        claims = _decode_common(payload)
        return claims if claims is not None else cls.parse(loads_claims(payload))

    def _parse_ext(self, ext: object) -> None:
        # Defaults are never written out: one meaning, one encoding.
        if not isinstance(ext, dict) or not ext:
            raise Malformed("the crumb claim is a non-empty map")
        for key in ext:
            if key not in _KNOWN_EXT:
                raise UnknownCaveat(f"crumb extension field {key!r} is not understood")
        if EXT_USES in ext:
            uses = _uint(ext[EXT_USES], "uses")
            if not 2 <= uses <= MAX_USES:
                raise Malformed("uses is written only when 2 or more (absent means 1)")
            self.uses = uses
        if EXT_CHAIN in ext:
            self.chain = _parties(ext[EXT_CHAIN], "chain")
        if EXT_ATTENUATORS in ext:
            self.attenuators = _parties(ext[EXT_ATTENUATORS], "attenuator")
        if EXT_CAVEATS in ext:
            self.caveats = cav.check_list(ext[EXT_CAVEATS])
            if not self.caveats:
                raise Malformed("an empty caveat list is written as no list")
        if EXT_OPEN in ext:
            key = ext[EXT_OPEN]
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES:
                raise Malformed("the open-attenuation key is 32 bytes")
            self.open_key = key

    def to_map(self) -> dict:
        m: dict[int, Any] = {CLAIM_EXP: self.exp, CLAIM_IAT: self.iat, CLAIM_CTI: self.cti,
                             CLAIM_SCOPE: scope_bytes(self.scope)}
        for key, value in ((CLAIM_ISS, self.iss), (CLAIM_SUB, self.sub), (CLAIM_AUD, self.aud),
                           (CLAIM_NBF, self.nbf)):
            if value is not None:
                m[key] = value
        ext: dict[int, Any] = {}
        if self.uses != 1:
            ext[EXT_USES] = self.uses
        if self.chain:
            ext[EXT_CHAIN] = [[p.name, p.keyref] for p in self.chain]
        if self.attenuators:
            ext[EXT_ATTENUATORS] = [[p.name, p.keyref] for p in self.attenuators]
        if self.caveats:
            ext[EXT_CAVEATS] = self.caveats
        if self.open_key is not None:
            ext[EXT_OPEN] = self.open_key
        if ext:
            m[CLAIM_CRUMB] = ext
        if self.cnf is not None:
            m[CLAIM_CNF] = self.cnf
        return m

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for name in ("iss", "sub", "aud", "exp", "nbf", "iat"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["cti"] = b64u(self.cti)
        out["scope"] = self.scope
        out["uses"] = self.uses
        if self.chain:
            out["chain"] = [p.to_json() for p in self.chain]
        if self.attenuators:
            out["attenuators"] = [p.to_json() for p in self.attenuators]
        if self.caveats:
            out["caveats"] = [cav.describe(c) for c in self.caveats]
        if self.open_key is not None:
            out["open"] = True
        if self.cnf is not None:
            out["pop"] = True
        return out


def _decode_common(p: bytes) -> Claims | None:
    """One pass over the common claims shape, or None to take the general path.

    The verifier's hot path: keys 1..9 in order, times as 4-byte uints, short
    text, a cti of 1..23 bytes and a one-entry scope with one text operation
    (its AIF in a byte string of 4..23 bytes).
    A cnf claim (8) is decoded by the core decoder and checked as the general
    path checks it. It accepts only bytes the general path accepts with the same result
    (tests/host/test_properties.py checks this differentially); anything else,
    valid or not, goes to the general path, which also produces the errors.
    """
    n = len(p)
    if n < 2 or not 0xA3 <= p[0] <= 0xA9:
        return None
    i, prev = 1, 0
    values: list = [None] * 10  # by claim key
    try:
        for _ in range(p[0] - 0xA0):
            k = p[i]
            if k <= prev or k > 9:
                return None
            prev = k
            if k == CLAIM_CNF:
                # A PoP token's cnf: its value through the core decoder, at the depth the general
                # path gives it (one level under the claims map), and the same shape check.
                try:
                    value, i = cbor.decode_item(p, i + 1, CLAIMS_DEPTH - 1)
                    from .pop import check_cnf
                    values[k] = check_cnf(value)
                except CrumbError:
                    return None  # the general path says what is wrong
                continue
            b = p[i + 1]
            i += 2
            if k == CLAIM_EXP or k == CLAIM_NBF or k == CLAIM_IAT:
                v = int.from_bytes(p[i:i + 4], "big")
                if b != 0x1A or v < 0x10000 or i + 4 > n:
                    return None
                values[k] = v
                i += 4
            elif k == CLAIM_CTI:
                end = i + b - 0x40
                if not 0x41 <= b <= 0x57 or end > n:
                    return None
                values[k] = p[i:end]
                i = end
            elif k == CLAIM_SCOPE:
                # bstr(4..23 bytes) holding [[resource, operation]], both short text
                end = i + b - 0x40
                if not 0x44 <= b <= 0x57 or p[i] != 0x81 or p[i + 1] != 0x82:
                    return None
                rb = p[i + 2]
                re_ = i + 3 + rb - 0x60
                ob = p[re_]
                oe = re_ + 1 + ob - 0x60
                if not (0x61 <= rb <= 0x77 and 0x61 <= ob <= 0x77) or oe != end or end > n:
                    return None
                resource = p[i + 3:re_].decode("utf-8")
                star = resource.find("*")
                if star != -1 and star != len(resource) - 1:
                    return None
                values[k] = [[resource, p[re_ + 1:oe].decode("utf-8")]]
                i = oe
            else:
                end = i + b - 0x60
                if not 0x61 <= b <= 0x77 or end > n:
                    return None
                values[k] = p[i:end].decode("utf-8")
                i = end
    except (IndexError, UnicodeDecodeError):
        return None
    exp, iat, cti, scope = values[CLAIM_EXP], values[CLAIM_IAT], values[CLAIM_CTI], values[CLAIM_SCOPE]
    if i != n or exp is None or iat is None or cti is None or scope is None:
        return None
    # Slots set directly: keyword-argument __init__ costs a microsecond on the hot path.
    c = _new(Claims)
    c.iss, c.sub, c.aud = values[CLAIM_ISS], values[CLAIM_SUB], values[CLAIM_AUD]
    c.exp, c.nbf, c.iat, c.cti, c.scope = exp, values[CLAIM_NBF], iat, cti, scope
    c.uses, c.chain, c.attenuators, c.caveats, c.open_key, c.cnf = 1, [], [], [], None, values[CLAIM_CNF]
    return c


_new = object.__new__
