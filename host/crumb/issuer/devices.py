"""A device's life from the command line: enrolment, rekeying, revocation, deployment.

`crumb device add|rekey|revoke` and `crumb firmware deploy` go through here.
Each change is appended to the audit log inside the registry's transaction,
before it commits (registry.Record): if the record cannot be written, the
change is not made, so the log holds every change the registry does. The
command line appends to a chain of its own (DataDir.claim_audit), never to
one a running issuer process holds.

The credential file a device loads (`ucrumb.client.from_file`) is made here
too, and written 0600 from its first byte (crumb.keys.write_private).
"""

from __future__ import annotations

import csv
import json
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..keys import write_private
from . import audit
from .datadir import DataDir
from .keystore import load_or_create_master
from .protocol import check_device_id, derive_device_key
from .registry import AlreadyRevoked, Registry

DEFAULT_ISSUER_URL = "http://127.0.0.1:8080"
MAX_CSV_BYTES = 16 << 20  # a bulk file: 16 MiB is hundreds of thousands of devices
CSV_COLUMNS = ("id", "group", "url")


class LifecycleError(ValueError):
    """A lifecycle action that cannot be done (revoked device, bad CA file, ...), said in words."""


def read_ca(path: str | os.PathLike) -> str:
    """The PEM text of the CA certificate(s) in ``path``: what a device pins the issuer's TLS to."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LifecycleError(f"cannot read the CA file {path}: {e}") from None
    blocks = [b for b in text.split("-----END CERTIFICATE-----") if "-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise LifecycleError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    pems = []
    for block in blocks:
        pem = block[block.index("-----BEGIN CERTIFICATE-----"):] + "-----END CERTIFICATE-----\n"
        try:
            ssl.PEM_cert_to_DER_cert(pem)
        except ValueError as e:
            raise LifecycleError(f"{path}: a certificate is not valid PEM ({e})") from None
        pems.append(pem)
    return "".join(pems)


def credentials(master: bytes, device_id: str, keygen: int, issuer_url: str, group: str | None = None,
                ca: str | None = None) -> dict[str, Any]:
    """The JSON object ucrumb.client.from_file loads: id, key, issuer URL (and group, CA pin)."""
    creds: dict[str, Any] = {"device_id": device_id, "key": derive_device_key(master, device_id, keygen).hex(),
                             "issuer": issuer_url}
    if group:
        creds["group"] = group
    if ca:
        creds["ca"] = ca  # ucrumb verifies the issuer's TLS certificate against this CA only
    return creds


def credential_text(creds: dict[str, Any]) -> str:
    return json.dumps(creds, indent=1) + "\n"


def write_credentials(path: str | os.PathLike, creds: dict[str, Any]) -> None:
    write_private(path, credential_text(creds))


class Lifecycle:
    """Registry changes, each recorded in the audit log first (see the module docstring).

    ``url``: the issuer URL written into credentials (else the policy's
    ``[issuer] url``, else http://127.0.0.1:8080); ``ca``: PEM text of the CA a
    device pins the issuer's TLS certificate to. Use as a context manager.
    """

    def __init__(self, data: DataDir, *, url: str | None = None, policy_url: str | None = None,
                 ca: str | None = None) -> None:
        self.data = data.create()
        self.url = url or policy_url or DEFAULT_ISSUER_URL
        self.ca = ca
        self.registry = Registry(data.registry)
        self.master = load_or_create_master(data.root)
        self._chain: tuple[Path, int] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.registry.close()
        if self._chain is not None:
            os.close(self._chain[1])  # releases the chain's claim
            self._chain = None

    def record(self, device: str, change: dict[str, Any]) -> None:
        """Append one lifecycle event for ``device`` to the audit log (committed when this returns)."""
        if self._chain is None:
            self._chain = self.data.claim_audit()
        audit.append_now(self._chain[0], {"t": int(time.time() * 1000), "device": device, "by": "cli", **change})

    def _recorder(self, device: str, **extra: Any):  # -> registry.Record
        return lambda change: self.record(device, {**change, **extra})

    def credentials(self, device_id: str, keygen: int, group: str | None, url: str | None = None) -> dict[str, Any]:
        return credentials(self.master, device_id, keygen, url or self.url, group, self.ca)

    def enroll(self, device_id: str, group: str | None, url: str | None = None) -> tuple[dict[str, Any], bool]:
        """(credentials, whether the device is new). Enrolling again moves it to ``group``
        and gives the same key (its current generation)."""
        check_device_id(device_id)
        try:
            new = self.registry.add(device_id, group, self._recorder(device_id))
        except AlreadyRevoked as e:
            raise LifecycleError(str(e)) from None
        current = self.registry.get(device_id)
        return self.credentials(device_id, current.keygen if current else 0, group, url), new

    def rekey(self, device_id: str) -> tuple[dict[str, Any], int]:
        """(credentials with the new key, the new key generation). The old key stops
        authenticating the device from the issuer's next request on."""
        check_device_id(device_id)
        try:
            keygen = self.registry.rekey(device_id, self._recorder(device_id))
        except AlreadyRevoked as e:
            raise LifecycleError(str(e)) from None
        current = self.registry.get(device_id)
        return self.credentials(device_id, keygen, current.group if current else None), keygen

    def revoke(self, device_id: str, reason: str | None) -> bool:
        check_device_id(device_id)
        return self.registry.revoke(device_id, reason, self._recorder(device_id))

    def existing(self, device_id: str) -> dict[str, Any] | None:
        """The credentials of an enrolled device (its key is derived again: nothing is stored), or None."""
        current = self.registry.get(device_id)
        if current is None or not current.enrolled:
            return None
        return self.credentials(device_id, current.keygen, current.group)


@dataclass
class CsvRow:
    line: int
    id: str
    group: str | None
    url: str | None


@dataclass
class CsvProblem:
    line: int
    message: str


def read_csv(path: str | os.PathLike) -> Iterator[CsvRow | CsvProblem]:
    """The rows of a bulk enrolment file, and a problem (with its line) for each bad one.

    The first line names the columns: ``id`` (required), ``group`` and ``url``
    (optional, empty for none). A duplicate id is a problem on every line after
    its first; bad rows never stop the rows after them.
    """
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CSV_BYTES:
            raise LifecycleError(f"{path} is larger than {MAX_CSV_BYTES >> 20} MiB")
        text = p.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first column's name
    except (OSError, UnicodeDecodeError) as e:
        raise LifecycleError(f"cannot read {path}: {e}") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise LifecycleError(f"{path} is empty: its first line names the columns ({', '.join(CSV_COLUMNS)})") from None
    except csv.Error as e:
        raise LifecycleError(f"{path}:1: {e}") from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "id" not in header or unknown or len(set(header)) != len(header):
        raise LifecycleError(f"{path}:1: the first line names the columns: id, and optionally group and url "
                             f"(got {', '.join(header) or 'nothing'})")
    seen: dict[str, int] = {}
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield CsvProblem(reader.line_num, f"not CSV: {e}")
            continue
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != len(header):
            yield CsvProblem(line, f"{len(fields)} fields where the first line names {len(header)}")
            continue
        row = {h: f.strip() for h, f in zip(header, fields)}
        device = row["id"]
        try:
            check_device_id(device)
        except ValueError as e:
            yield CsvProblem(line, str(e))
            continue
        if device in seen:
            yield CsvProblem(line, f"device {device!r} is already on line {seen[device]}")
            continue
        seen[device] = line
        yield CsvRow(line, device, row.get("group") or None, row.get("url") or None)
