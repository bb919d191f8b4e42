"""The issuer's data directory: where every file lives, created on first use.

    DATA/master.key        device master secret (0600)
    DATA/keys/             root signing keys and keyring.json (see keystore.py)
    DATA/registry.db       enrolled and revoked devices (SQLite, WAL)
    DATA/audit.db          the hash-chained audit log (SQLite, WAL); with several
    DATA/audit-N.db        issuer processes, one chain per process (see claim_audit);
    DATA/audit.00000k.db   segment k of a chain after rotation (audit.py)
    DATA/policy.toml       used when `serve` is given no --config (optional)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DEFAULT_DATA = "crumb-data"
ENV_DATA = "CRUMB_DATA"


def audit_chains(root: Path) -> list[Path]:
    """The audit chains with a segment file in ``root`` (a data directory or an archive), audit.db first."""
    chains: set[int] = set()
    for p in root.glob("audit*.db"):
        stem, _, segment = p.name[:-3].partition(".")
        if segment and not (len(segment) == 6 and segment.isdigit()):
            continue
        if stem == "audit":
            chains.add(0)
        elif stem.startswith("audit-") and stem[6:].isdigit() and str(int(stem[6:])) == stem[6:]:
            chains.add(int(stem[6:]))
    return [root / ("audit.db" if n == 0 else f"audit-{n}.db") for n in sorted(chains)]


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

    def audit_logs(self) -> list[Path]:
        """Every audit chain in the directory, named by its first segment's file (audit.db, audit-1.db, ...).

        A chain is listed when any of its segments is here, even once its first
        segments were archived and pruned (audit.000007.db names chain audit.db).
        """
        return audit_chains(self.root)

    def claim_audit(self) -> tuple[Path, int]:
        """The audit chain this process appends to, and the open lock fd that claims it.

        Each issuer process holds an exclusive lock on one chain for its
        lifetime (audit.db, else audit-1.db, ...), so processes never contend
        for one SQLite write lock per request batch, and each chain has exactly
        one writer. A restarted process takes up a free chain where it ended.
        """
        for n in range(1024):
            path = self.audit if n == 0 else self.root / f"audit-{n}.db"
            fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return path, fd
        raise RuntimeError("more than 1024 issuer processes hold audit chains in this data directory")

    @property
    def policy(self) -> Path:
        return self.root / "policy.toml"

    def create(self) -> DataDir:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # it holds the master secret and the root keys
        return self

    def exists(self) -> bool:
        return self.master.exists()
