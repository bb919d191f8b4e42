"""The issuer's data directory: where every file lives, created on first use.

    DATA/master.key        device master secret (0600)
    DATA/keys/             root signing keys and keyring.json (see keystore.py)
    DATA/registry.db       enrolled and revoked devices (SQLite, WAL)
    DATA/audit.db          the hash-chained audit log (SQLite, WAL)
    DATA/policy.toml       used when `serve` is given no --config (optional)
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA = "crumb-data"
ENV_DATA = "CRUMB_DATA"


class DataDir:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root or os.environ.get(ENV_DATA) or DEFAULT_DATA).resolve()

    @property
    def master(self) -> Path:
        return self.root / "master.key"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def registry(self) -> Path:
        return self.root / "registry.db"

    @property
    def audit(self) -> Path:
        return self.root / "audit.db"

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    def create(self) -> "DataDir":
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # it holds the master secret and the root keys
        return self

    def exists(self) -> bool:
        return self.master.exists()
