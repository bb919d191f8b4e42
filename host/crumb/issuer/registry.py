"""The device registry (SQLite): enrolled devices and the revocation deny list.

No secrets live here: a device's key is derived from the master secret, its
id and its key generation on every request. The registry says who is
enrolled (and in which group), each device's key generation (raised by
`crumb device rekey`; 0 for a device never rekeyed) and who is revoked. Revocation is final for an id: the derived key
of a revoked device cannot be trusted again, so it cannot be re-enrolled.

The running issuer keeps the two tables in memory. Every write through this
module is followed by a new random value in ``registry.gen``, an 8-byte file
each issuer process maps into memory; before each request the issuer
compares those 8 bytes (a memory read, no system call) and reloads when
they changed. So a revocation applies from the next request after
`crumb device revoke` returns. Writes made some other way (plain SQL) are
still caught by SQLite's ``PRAGMA data_version``, checked once a second.
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..wire import MAX_KEY_GENERATION
from .protocol import check_device_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id      TEXT PRIMARY KEY,
    grp     TEXT,
    added   REAL,
    revoked REAL,
    reason  TEXT,
    keygen  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""


class Device(NamedTuple):
    id: str
    group: str | None
    added: float | None
    revoked: float | None
    reason: str | None
    keygen: int

    @property
    def enrolled(self) -> bool:
        return self.added is not None and self.revoked is None


class AlreadyRevoked(ValueError):
    pass


# Called with a change (its "event" and details) inside the registry's transaction,
# before the commit: if it raises, nothing changes. crumb.issuer.devices passes one
# that appends the change to the audit log, so no change goes unrecorded.
Record = Callable[[dict], None]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    # Registries written before `crumb device rekey` existed have no keygen column:
    # every device in them is at generation 0, the column's default.
    if "keygen" not in {row[1] for row in conn.execute("PRAGMA table_info(devices)")}:
        conn.execute("ALTER TABLE devices ADD COLUMN keygen INTEGER NOT NULL DEFAULT 0")
    return conn


class Generation:
    """8 shared bytes that change after every registry write (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._map = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def read(self) -> bytes:
        return self._map[:8]

    def bump(self) -> None:
        # A fresh random value, not an increment: two writers can never write
        # the same "next" value and so hide one change behind the other.
        self._map[:8] = os.urandom(8)

    def close(self) -> None:
        self._map.close()


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self.generation = Generation(path.with_suffix(".gen"))
        self.known: dict[str, str | None] = {}
        self.keygens: dict[str, int] = {}  # devices rekeyed at least once: id -> key generation
        self.revoked: set[str] = set()
        self._version = -1
        self._gen = b""
        self._checked = 0.0
        self.refresh()

    def close(self) -> None:
        self.conn.close()
        self.generation.close()

    # -- the server's view ------------------------------------------------------------

    def refresh(self) -> bool:
        """Reload the tables if anyone committed since we last looked."""
        gen = self.generation.read()
        if gen != self._gen:
            self._gen = gen
            self._reload()
            return True
        now = time.monotonic()
        if now - self._checked < 1.0:
            return False
        self._checked = now
        if self.conn.execute("PRAGMA data_version").fetchone()[0] == self._version:
            return False
        self._reload()
        return True

    def _reload(self) -> None:
        known: dict[str, str | None] = {}
        keygens: dict[str, int] = {}
        revoked: set[str] = set()
        with self.conn:
            self.conn.execute("BEGIN")  # one consistent snapshot, and its data_version
            self._version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            for device, group, added, rev, keygen in self.conn.execute(
                    "SELECT id, grp, added, revoked, keygen FROM devices"):
                if rev is not None:
                    revoked.add(device)
                    continue
                if added is not None:
                    known[device] = group
                if keygen:
                    keygens[device] = keygen
        self.known, self.keygens, self.revoked = known, keygens, revoked

    # -- administration ---------------------------------------------------------------

    def get(self, device: str) -> Device | None:
        row = self.conn.execute("SELECT id, grp, added, revoked, reason, keygen FROM devices WHERE id = ?",
                                (device,)).fetchone()
        return Device(*row) if row else None

    def add(self, device: str, group: str | None, record: Record | None = None) -> bool:
        """Enroll (or move to another group). False if it was already enrolled.

        ``record`` (see Record) is given the change before it is committed.
        """
        check_device_id(device)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            current = self.get(device)
            if current is not None and current.revoked is not None:
                raise AlreadyRevoked(f"device {device!r} was revoked; its key cannot be trusted again "
                                     "(enroll the hardware under a new id)")
            if current is None:
                self.conn.execute("INSERT INTO devices (id, grp, added) VALUES (?, ?, ?)",
                                  (device, group, time.time()))
            else:  # (a row without `added` only recorded a rekey of a device known from the policy)
                self.conn.execute("UPDATE devices SET grp = ?, added = COALESCE(added, ?) WHERE id = ?",
                                  (group, time.time(), device))
            new = current is None or current.added is None
            if record is not None:
                record({"event": "enrolled" if new else "re-enrolled", "group": group,
                        "keygen": current.keygen if current is not None else 0})
        self.generation.bump()  # after the commit: a reader that sees it sees the change
        return new

    def rekey(self, device: str, record: Record | None = None) -> int:
        """Move ``device`` to its next key generation; returns it. From the next request
        on, only the key of that generation authenticates the device.

        A revoked device cannot be rekeyed (revocation is final). A device known
        only from the policy gets a row that records its generation without
        enrolling it.
        """
        check_device_id(device)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            current = self.get(device)
            if current is not None and current.revoked is not None:
                raise AlreadyRevoked(f"device {device!r} was revoked; a new key cannot make it trusted again "
                                     "(enroll the hardware under a new id)")
            keygen = (current.keygen if current is not None else 0) + 1
            if keygen > MAX_KEY_GENERATION:
                raise ValueError(f"device {device!r} has used every key generation")
            if current is None:
                self.conn.execute("INSERT INTO devices (id, keygen) VALUES (?, ?)", (device, keygen))
            else:
                self.conn.execute("UPDATE devices SET keygen = ? WHERE id = ?", (keygen, device))
            if record is not None:
                record({"event": "rekeyed", "keygen": keygen})
        self.generation.bump()
        return keygen

    def revoke(self, device: str, reason: str | None = None, record: Record | None = None) -> bool:
        """Deny ``device`` from the next request on. False if it was revoked already.

        Any id can be revoked, enrolled or not (a device named only in the policy, say).
        """
        check_device_id(device)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            current = self.get(device)
            if current is not None and current.revoked is not None:
                return False
            if current is None:
                self.conn.execute("INSERT INTO devices (id, revoked, reason) VALUES (?, ?, ?)",
                                  (device, time.time(), reason))
            else:
                self.conn.execute("UPDATE devices SET revoked = ?, reason = ? WHERE id = ?",
                                  (time.time(), reason, device))
            if record is not None:
                record({"event": "revoked", "reason": reason})
        self.generation.bump()
        return True

    def all(self) -> list[Device]:
        return [Device(*row) for row in
                self.conn.execute("SELECT id, grp, added, revoked, reason, keygen FROM devices ORDER BY id")]

    def revoked_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM devices WHERE revoked IS NOT NULL")]
