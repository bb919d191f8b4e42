"""A verifying service's log: every token it accepted or refused, hash-chained like the issuer's audit log.

    log = ServiceLog("gateway.db", service="gateway", node_key=key.public)
    app = CrumbMiddleware(app, verifier, rule, node_key=key, service_log=log)
    consumer = MqttConsumer(verifier, handle, "sensors/#", service_log=log)

The records are crumb.auditchain's (the issuer's format, chain and checks),
in an SQLite file with the issuer's table, so `crumb audit verify --log
FILE` and `crumb audit trace` read it like the issuer's. One record per
decision (record() says what it holds). Each append is committed
(synchronous=FULL) before the decision takes effect: an accepted request
reaches the application only once its record is on disk, and a log that
cannot be written refuses the request with store_unavailable (fail closed).

One writer per file: a process opens its own log and appends under a lock;
appends from several threads of that process take turns. After each commit
the issuer's check runs (auditchain.commit_doubt, with a probe file beside
the log): a commit the file system may not have kept counts as failed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .. import auditchain
from ..errors import StoreUnavailable
from ..keys import PublicKey, b64u
from ..token import block_body, claims_of, split
from ..wire import BLOCK_ATTEST

EVENT_ACCEPTED = "accepted"
EVENT_REFUSED = "refused"


def token_facts(token: bytes | None) -> tuple[str | None, list[str]]:
    """(cti hex, names of the hops that attested, in block order) of a token, read without trusting it.

    For refusals: the token may be malformed or forged, so nothing here is
    verified; a token that does not even parse has neither.
    """
    if not token:
        return None, []
    try:
        tok = split(token)
        claims = claims_of(tok)
    except Exception:  # noqa: BLE001 -- anything unparseable is recorded as such, never raised
        return None, []
    hops: list[str] = []
    for block in tok.blocks:
        try:
            body = block_body(block)
            if body[0] == BLOCK_ATTEST and isinstance(body[1], int) and 0 <= body[1] < len(claims.chain):
                hops.append(claims.chain[body[1]].name)
        except Exception:  # noqa: BLE001
            break
    return claims.cti.hex() if isinstance(claims.cti, bytes) else None, hops


def record(*, service: str, kid: str | None, token: bytes | None, decision: str, code: str | None,
           resource: str | None, operation: str | None, hops: list[str] | None = None,
           message: str | None = None, now: float | None = None) -> dict:
    """The body of one decision.

    ``token`` (base64url, as received) is what lets `crumb audit trace` check
    offline, with the issuer's public key alone, the issuer's signature and
    every attestation the token carried when it reached this service; the
    attestation this service added is checked the same way from the next
    hop's record. ``hops``: the hops that attested before this one (the
    verified list when accepted; read unverified from the token when refused).
    """
    cti, seen = token_facts(token)
    body: dict = {"event": decision, "service": service, "kid": kid, "cti": cti,
                  "resource": resource, "operation": operation, "hops": seen if hops is None else list(hops),
                  "t": int((time.time() if now is None else now) * 1000),
                  "token": b64u(token) if token else None}
    if decision == EVENT_REFUSED:
        body["code"] = code
        body["msg"] = (message or "")[:200]
    return body


class ServiceLog:
    """An append-only, hash-chained SQLite log of one service's decisions."""

    def __init__(self, path: str | Path, service: str, *, node_key: PublicKey | None = None,
                 sync: str = "FULL") -> None:
        self.path = Path(path)
        self.service = service
        self.kid = node_key.kid.hex() if node_key is not None else None
        self.sync = sync
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.records = 0
        self.failures = 0
        self._open()  # create the file and its table now: a bad path fails at start, not per request
        # After each commit, the issuer's check that the file system kept it (auditchain.commit_doubt):
        # a disk turning read-only can confirm an fsync it then loses.
        self._probe = auditchain.Probe(auditchain.probe_path(self.path))

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = auditchain.connect(self.path, self.sync)
        return self._conn

    def append(self, body: dict) -> int:
        """Commit one record; its seq. Raises StoreUnavailable if it is not on disk."""
        text = auditchain.canonical(body).encode("utf-8")
        with self._lock:
            try:
                conn = self._open()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # The head is read inside the write transaction: no other writer can
                    # slip a record in between, and a wrong seq would hit the primary key.
                    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                    seq, prev = (row[0] + 1, row[1]) if row else (1, auditchain.GENESIS)
                    conn.execute("INSERT INTO audit (seq, body, prev, hash) VALUES (?,?,?,?)",
                                 (seq, text, prev, auditchain.record_hash(prev, seq, text)))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                doubt = auditchain.commit_doubt(self.path, self._probe)
                if doubt is not None:
                    raise sqlite3.OperationalError(doubt)
            except (sqlite3.Error, OSError) as e:
                self.failures += 1
                self._close()
                raise StoreUnavailable(f"the service log cannot record this decision ({e})") from None
            self.records += 1
            return seq

    def log(self, **fields: Any) -> int:
        """Commit the record of one decision: record()'s keywords, but service and kid, which are this log's."""
        return self.append(record(service=self.service, kid=self.kid, **fields))

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()
            self._probe.close()
