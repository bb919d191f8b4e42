"""Ed25519 keys, key ids, and the key file format.

Key files are JSON Web Keys for Ed25519 (RFC 8037): ``{"kty": "OKP",
"crv": "Ed25519", "x": <public>, "d": <private seed>, "kid": <hex>}``, with
base64url (no padding) values. A private key file is written 0600; its
public half goes beside it as ``PATH.pub`` (no ``d``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from . import boundedjson
from .errors import InvalidKey
from .wire import KID_BYTES, PUBLIC_KEY_BYTES

#: A key file is one JWK or a saved GET /keys document (at most 64 keys): a few KiB.
MAX_KEY_FILE_BYTES = 64 * 1024


def kid_of(public: bytes) -> bytes:
    """A key's id: the first KID_BYTES of SHA-256 over the raw public key."""
    return hashlib.sha256(public).digest()[:KID_BYTES]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: object) -> bytes:
    """Strict base64url without padding: the one text form of the bytes, or ValueError.

    Total: any value that is not text (a number, a list, None from a JSON document) is a TypeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"base64url is text, not {type(text).__name__}")
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64url") from None
    # b64decode skips characters outside the alphabet and ignores stray low
    # bits; re-encoding is the cheapest way to accept exactly one spelling.
    if not text or b64u(raw) != text:
        raise ValueError("not canonical base64url without padding")
    return raw


class PublicKey:
    """An Ed25519 public key and its kid (the first 4 bytes of SHA-256 of the key).

    Args:
        raw: the 32-byte public key.

    Raises:
        ValueError: not 32 bytes.
    """

    __slots__ = ("kid", "raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self.kid = kid_of(raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        # PyNaCl's public binding of libsodium's crypto_sign_open: no wrapper object per call.
        # It reads the first 64 bytes as the signature, so any other length is refused here.
        if len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + message, self.raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid.hex()})"

    def to_jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64u(self.raw), "kid": self.kid.hex()}


class SigningKey:
    """An Ed25519 private key; ``.public`` is its PublicKey, ``.kid`` the kid.

    Args:
        seed: the 32-byte seed (``SigningKey.generate()`` makes a random one).

    Raises:
        ValueError: not 32 bytes.
    """

    __slots__ = ("_nacl", "_sk", "public", "seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.seed = seed
        self._nacl = nacl.signing.SigningKey(seed)
        self.public = PublicKey(bytes(self._nacl.verify_key))
        self._sk = seed + self.public.raw  # libsodium's 64-byte secret key layout: seed || public

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key (from os.urandom)."""
        return cls(os.urandom(32))

    @property
    def kid(self) -> bytes:
        return self.public.kid

    @property
    def secret_bytes(self) -> bytes:
        """libsodium's 64-byte secret key (seed || public key), for native batch signing."""
        return self._sk

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        # The issuer (without its native writer) signs every token on its event loop:
        # PyNaCl's public binding of libsodium's crypto_sign, without SigningKey.sign's
        # SignedMessage wrapper. Its first 64 bytes are the signature.
        return nacl.bindings.crypto_sign(message, self._sk)[:64]

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid.hex()})"

    def to_jwk(self) -> dict:
        return {**self.public.to_jwk(), "d": b64u(self.seed)}


def generate() -> SigningKey:
    return SigningKey.generate()


def write_private(path: str | os.PathLike, text: str) -> None:
    """Write a secret to ``path``: 0600 from its first byte, replacing any file there.

    The text goes into a new file next to ``path`` (created exclusively, mode
    0600, under a name nobody else can have made first) that is then renamed
    over ``path``. Opening ``path`` itself would keep the mode of a file that
    is already there, say a 0644 one, and truncating it would leave the old
    secret readable until the new one is written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save(key: SigningKey, path: str | os.PathLike) -> Path:
    """Write the private key to ``path`` (0600, see write_private) and the public key to ``path.pub``."""
    path = Path(path)
    write_private(path, json.dumps(key.to_jwk(), indent=1) + "\n")
    pub = path.with_name(path.name + ".pub")
    pub.write_text(json.dumps(key.public.to_jwk(), indent=1) + "\n")
    return pub


class KeyFileError(InvalidKey):
    """A key file that cannot be used (code ``invalid_key``; a ValueError too)."""


def read_json(path: str | os.PathLike) -> object:
    """A key file's JSON, or KeyFileError saying why it cannot be had.

    Bounded: at most MAX_KEY_FILE_BYTES bytes are read and the nesting depth is
    checked before parsing (boundedjson), so no file makes this raise anything else.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror or e}") from None
    try:
        return boundedjson.loads(data, max_bytes=MAX_KEY_FILE_BYTES)
    except ValueError as e:
        raise KeyFileError(f"{path} is not a JSON key file ({e})") from None


def _read_jwk(path: str | os.PathLike) -> dict:
    jwk = read_json(path)
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise KeyFileError(f"{path} is not an Ed25519 JWK (kty OKP, crv Ed25519)")
    return jwk


def _field(jwk: dict, name: str, path: object) -> bytes:
    try:
        value = unb64u(jwk[name])
    except (KeyError, TypeError, ValueError):
        raise KeyFileError(f"{path}: missing or invalid '{name}'") from None
    if len(value) != 32:
        raise KeyFileError(f"{path}: '{name}' must be 32 bytes")
    return value


def load_signing_key(path: str | os.PathLike) -> SigningKey:
    """A private key from a JWK file (what ``crumb keygen`` writes).

    Raises:
        KeyFileError: code ``invalid_key`` (also a ValueError): the file cannot
            be read, is not an Ed25519 JWK, or its public half does not match.
    """
    jwk = _read_jwk(path)
    key = SigningKey(_field(jwk, "d", path))
    if "x" in jwk and _field(jwk, "x", path) != key.public.raw:
        raise KeyFileError(f"{path}: public half 'x' does not match the private key")
    return key


def load_public_key(path: str | os.PathLike) -> PublicKey:
    """A public key from a JWK file; a private key file is accepted too (its public half is used).

    Raises:
        KeyFileError: code ``invalid_key`` (also a ValueError): the file cannot
            be read or is not an Ed25519 JWK.
    """
    jwk = _read_jwk(path)
    if "d" in jwk:
        return load_signing_key(path).public
    return PublicKey(_field(jwk, "x", path))
