"""The issuer's secrets in its data directory: root signing keys and the device master secret.

    DATA/master.key          device master secret, 32 bytes as hex (0600)
    DATA/keys/<kid>.jwk      root signing keys (JWK, 0600) with <kid>.jwk.pub beside
    DATA/keys/keyring.json   {"current": kid, "previous": kid | null, "retired": [kid, ...]}

Rotation writes the new key file first and then replaces keyring.json
atomically (write + rename), so a running issuer sees either the old ring or
the new one, never half of one. It notices within a second (``refresh``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..keys import KeyFileError, SigningKey, load_signing_key, read_json, save, write_private
from ..wire import KID_BYTES

MASTER_BYTES = 32


def _is_kid(value: object) -> bool:
    # A kid names a file in the key directory: hex of its bytes, nothing that could be a path.
    return isinstance(value, str) and len(value) == 2 * KID_BYTES and all(c in "0123456789abcdef" for c in value)


def load_or_create_master(data: Path) -> bytes:
    path = data / "master.key"
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        write_private(path, os.urandom(MASTER_BYTES).hex() + "\n")
    try:
        master = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: not a hex master secret ({e})") from None
    if len(master) != MASTER_BYTES:
        raise KeyFileError(f"{path}: the master secret is {MASTER_BYTES} bytes")
    return master


class Keyring:
    """Root keys: one current (signs), one previous (still published), older ones retired."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.current: SigningKey | None = None
        self.previous: SigningKey | None = None
        self.retired: list[str] = []
        self._stamp: tuple | None = None
        self._checked = 0.0

    @property
    def state_path(self) -> Path:
        return self.dir / "keyring.json"

    @classmethod
    def open(cls, directory: Path, create: bool = True) -> Keyring:
        ring = cls(directory)
        if not ring.state_path.exists():
            if not create:
                raise KeyFileError(f"no keyring at {ring.state_path}")
            ring.dir.mkdir(parents=True, exist_ok=True)
            key = SigningKey.generate()
            save(key, ring.dir / f"{key.kid.hex()}.jwk")
            ring._write({"current": key.kid.hex(), "previous": None, "retired": []})
        ring.load()
        return ring

    def _write(self, state: dict) -> None:
        write_private(self.state_path, json.dumps(state, indent=1) + "\n")

    def _stat(self) -> tuple:
        st = self.state_path.stat()
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def load(self) -> None:
        stamp = self._stat()
        state = read_json(self.state_path)  # bounded in size and depth: KeyFileError, nothing else
        if (not isinstance(state, dict) or not _is_kid(state.get("current"))
                or not (state.get("previous") is None or _is_kid(state["previous"]))
                or not isinstance(state.get("retired", []), list) or not all(map(_is_kid, state.get("retired", [])))):
            raise KeyFileError(f"{self.state_path}: unusable keyring (not "
                               '{"current": kid, "previous": kid | null, "retired": [kid, ...]}, kids in hex)')
        current = load_signing_key(self.dir / f"{state['current']}.jwk")
        previous = load_signing_key(self.dir / f"{state['previous']}.jwk") if state.get("previous") else None
        self.current, self.previous = current, previous
        self.retired = list(state.get("retired", []))
        self._stamp = stamp

    def refresh(self, now: float | None = None) -> bool:
        """Reload if keyring.json changed; checks the file at most once a second."""
        now = time.monotonic() if now is None else now
        if now - self._checked < 1.0:
            return False
        self._checked = now
        try:
            if self._stat() == self._stamp:
                return False
            self.load()
        except (OSError, KeyFileError):
            return False  # keep signing with the ring we have; `crumb keys list` shows the problem
        return True

    def rotate(self) -> SigningKey:
        """Make a new current key; the old current becomes previous, the old previous retires."""
        key = SigningKey.generate()
        save(key, self.dir / f"{key.kid.hex()}.jwk")
        assert self.current is not None
        retired = self.retired + ([self.previous.kid.hex()] if self.previous else [])
        self._write({"current": key.kid.hex(), "previous": self.current.kid.hex(), "retired": retired})
        self.load()
        return key

    def published(self) -> list[tuple[SigningKey, str]]:
        """(key, status) for GET /keys: current first, then previous."""
        out = [(self.current, "current")] if self.current else []
        if self.previous is not None:
            out.append((self.previous, "previous"))
        return out
