"""What runs inside PostgreSQL: crumb's own ``Verifier``, its keys and spent uses in tables.

``crumb._boot()`` (schema.sql) imports this module into a PL/Python session
and keeps one ``Backend`` in ``GD``; the SQL functions call its methods:

    crumb.verify(token, resource, operation)   -> Backend.verify
    crumb.allows(resource, operation[, through]) -> Backend.allows (token: crumb.token)
    crumb.claims()                             -> Backend.claims (token: crumb.token)

Nothing here re-implements a check: ``Verifier.check_token`` /
``check_request`` / ``spend`` are the steps of ``Verifier.verify``. What is
PostgreSQL's own: where keys come from (``TableKeys``: crumb.keys), where uses
are spent (``SpentTable``: crumb.spent, in the caller's transaction), and the
per-transaction cache that lets a policy call ``allows()`` for every row
while the token is verified once.

Every refusal is an error with SQLSTATE 42501 (insufficient_privilege), the
stable code as DETAIL and ``crumb: CODE: message`` as the message; nothing
that goes wrong here ever turns into an allow. This module needs only the
token core (cbor2, PyNaCl): no psycopg, no httpx.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, NoReturn

from ... import auditchain
from ...errors import ChainIncomplete, CrumbError, MissingToken, ScopeDenied, StoreUnavailable, TooLarge
from ...keys import PublicKey
from ...replay import DEFAULT_LEEWAY
from ...token import to_bytes
from ...verify import Verified, Verifier
from ...wire import MAX_TOKEN_BYTES
from .. import servicelog

DENIED = "42501"  # insufficient_privilege
# Codes that depend on the row (its resource or operation), not on the token:
# allows() answers false for them, so a SELECT policy filters rows instead of
# failing the statement. Every other code fails the statement.
ROW_CODES = frozenset({"scope_denied", "caveat_failed"})
MAX_TEXT = (MAX_TOKEN_BYTES * 4 + 2) // 3  # base64url length of the largest token: refused before decoding
MAX_PAIRS = 1024  # (resource, operation) answers kept per token and transaction
# Appends to crumb.log take this transaction-level advisory lock first: the chain has one
# writer at a time, and the head read after the lock is the last committed record (READ
# COMMITTED takes a new snapshot per statement). Held to the end of the transaction.
LOG_LOCK = 0x63_72_75_6D_62_6C_6F_67  # "crumblog"


def trusted_keys(plpy: Any) -> tuple[list[PublicKey], list[PublicKey]]:
    """(issuer keys, node keys) with status trusted in crumb.keys."""
    issuer: list[PublicKey] = []
    nodes: list[PublicKey] = []
    for row in plpy.execute("SELECT role, public_key FROM crumb.keys WHERE status = 'trusted'"):
        (issuer if row["role"] == "issuer" else nodes).append(PublicKey(bytes(row["public_key"])))
    return issuer, nodes


class SpentTable:
    """A ``ReplayStore`` over crumb.spent, written in the caller's transaction.

    One statement takes a use: the insert of a first use, or the increment of
    a row with uses left. The primary key (cti, hop) serialises transactions
    spending the same token: the second waits for the first to end, then finds
    the use spent (it committed) or free (it rolled back). Under REPEATABLE READ
    or SERIALIZABLE the second fails with a serialization error instead, which
    is a refusal too (SQLSTATE kept, so the caller may retry).
    """

    def __init__(self, plpy: Any, leeway: int) -> None:
        self._plpy = plpy
        #: Rows outlive their token's exp by at least this (crumb.purge_spent keeps at least the
        #: configured leeway), and the table is PostgreSQL's, durable: it has no restart fence.
        self.leeway = leeway
        self._take = plpy.prepare(
            "INSERT INTO crumb.spent AS s (cti, hop, used, exp, tx) "
            "VALUES ($1, $2, 1, $3, pg_current_xact_id()) "
            "ON CONFLICT (cti, hop) DO UPDATE SET used = s.used + 1, exp = excluded.exp, tx = excluded.tx "
            "WHERE s.used < $4 RETURNING pg_current_xact_id()::text AS tx, "
            "(SELECT value FROM crumb.settings WHERE name = 'keys_version') AS keys",
            ["bytea", "text", "int8", "int4"])
        #: (transaction, keys_version) as the last use taken saw them: the statement that spends
        #: also says where we are, so a first use costs one statement (Backend.allows).
        self.where: tuple[str, Any] | None = None

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        self.where = None
        try:
            rows = self._plpy.execute(self._take, [cti, hop, exp, uses])
        except self._plpy.SPIError as e:  # a read-only transaction, a lock timeout, a serialization failure
            raise _store_error(e, "cannot record the use in crumb.spent") from None
        if not rows.nrows():
            return False
        self.where = (rows[0]["tx"], rows[0]["keys"])
        return True


def _store_error(e: Any, what: str) -> CrumbError:
    err = StoreUnavailable(f"{what}: {e}")
    err.sqlstate = getattr(e, "sqlstate", None) or DENIED  # type: ignore[attr-defined]
    return err


class LogTable:
    """crumb.log, the database's service log: one record per accepted token, in the caller's transaction.

    The records and their chain are crumb.auditchain's (what servicelog.record
    writes), so `crumb audit verify --dsn` and `crumb audit trace --log DSN`
    read them like any other log. A record that cannot be written is a
    StoreUnavailable: the statement is refused, and nothing is accepted
    without its record. A transaction that rolls back takes its records with
    it, as it takes back the use and the data: the log holds what committed.
    """

    def __init__(self, plpy: Any, service: str) -> None:
        self._plpy = plpy
        self.service = service
        self._lock = plpy.prepare("SELECT pg_catalog.pg_advisory_xact_lock($1)", ["int8"])
        self._head = plpy.prepare("SELECT seq, hash FROM crumb.log ORDER BY seq DESC LIMIT 1")
        self._insert = plpy.prepare("INSERT INTO crumb.log (seq, body, prev, hash) VALUES ($1, $2, $3, $4)",
                                    ["int8", "bytea", "bytea", "bytea"])

    def append(self, token: str, verified: Verified, resource: str, operation: str) -> None:
        body = servicelog.record(service=self.service, kid=None, token=to_bytes(token),
                                 decision=servicelog.EVENT_ACCEPTED, code=None, resource=resource,
                                 operation=operation, hops=verified.attested)
        text = auditchain.canonical(body).encode("utf-8")
        try:
            self._plpy.execute(self._lock, [LOG_LOCK])
            rows = self._plpy.execute(self._head)
            seq, prev = (rows[0]["seq"] + 1, bytes(rows[0]["hash"])) if rows.nrows() else (1, auditchain.GENESIS)
            self._plpy.execute(self._insert, [seq, text, prev, auditchain.record_hash(prev, seq, text)])
        except self._plpy.SPIError as e:  # read-only transaction, lock timeout, a stale snapshot's seq
            raise _store_error(e, "cannot record the decision in crumb.log") from None


class _Entry:
    """One token in the current transaction: checked once, spent at most once."""

    __slots__ = ("answers", "spent", "verified")

    def __init__(self, verified: Verified) -> None:
        self.verified = verified
        self.spent = False
        self.answers: dict[tuple[str, str], bool] = {}


class Backend:
    """One per session: the verifier, the settings (read once), the transaction cache."""

    def __init__(self, plpy: Any) -> None:
        self._plpy = plpy
        settings = {r["name"]: r["value"] for r in plpy.execute("SELECT name, value FROM crumb.settings")}
        self.hop: str | None = settings.get("hop") or None
        self._audience = settings.get("audience") or None
        self._leeway = int(settings.get("leeway") or DEFAULT_LEEWAY)
        self._spent = SpentTable(plpy, self._leeway)
        self._log = LogTable(plpy, settings["log"]) if settings.get("log") else None
        self._keys_version: object = self  # no keys loaded yet: differs from any version read
        self._tx: str | None = None
        self._cache: dict[str, _Entry] = {}
        self.verifier = self._new_verifier()
        # One statement per call says where we are: the current transaction; whether this
        # transaction's use of a token is still recorded (a ROLLBACK TO SAVEPOINT takes the
        # row back, and then the token must be spent again before anything more is
        # allowed); and the version of crumb.keys.
        self._where = plpy.prepare(
            "SELECT pg_current_xact_id()::text AS tx, EXISTS (SELECT 1 FROM crumb.spent "
            "WHERE cti = $1 AND hop = $2 AND tx = pg_current_xact_id()) AS mine, "
            "(SELECT value FROM crumb.settings WHERE name = 'keys_version') AS keys", ["bytea", "text"])

    def _new_verifier(self) -> Verifier:
        issuer, nodes = trusted_keys(self._plpy)
        # Keys given to the Verifier (not resolved per token): it caches each issuer
        # key's signing prefix by protected header, the fast path of a service.
        return Verifier(issuer, node_keys=nodes, replay=self._spent, hop=self.hop, audience=self._audience,
                        leeway=self._leeway)

    # -- the SQL functions

    def verify(self, token: str | None, resource: str | None, operation: str | None) -> str:
        """crumb.verify(): the claims as JSON text (PL/Python converts it to jsonb)."""
        try:
            self._refresh(b"")  # the keys, as for allows(); nothing is cached for verify()
            verified = self.verifier.verify(self._bounded(token), _text(resource), _text(operation))
            if self._log is not None:
                self._log.append(token, verified, resource, operation)  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 -- every failure is a refusal, never an allow
            self._deny(e)
        return json.dumps(verified.to_json())

    def allows(self, token: str | None, resource: str | None, operation: str | None,
               through: list | None) -> bool:
        """crumb.allows(): the token verified once per transaction, each (resource, operation) checked."""
        try:
            token = self._bounded(token)
            key = (_text(resource), _text(operation))
            if token not in self._cache and self._first_use(token, key, through):
                return True
            entry = self._entry(token)
            _check_through(entry.verified, through)
            ok = entry.answers.get(key)
            if ok is None:
                try:
                    self.verifier.check_request(entry.verified, *key)
                    ok = True
                except CrumbError as e:
                    if e.code not in ROW_CODES:
                        raise
                    ok = False
                if len(entry.answers) >= MAX_PAIRS:
                    entry.answers.clear()
                entry.answers[key] = ok
            if ok and not entry.spent:
                self.verifier.spend(entry.verified)
                if self._log is not None:  # the record goes with the use: same transaction, same fate
                    self._log.append(token, entry.verified, *key)  # type: ignore[arg-type]
                entry.spent = True
            return ok
        except Exception as e:  # noqa: BLE001 -- every failure is a refusal, never an allow
            self._deny(e)

    def _first_use(self, token: str, key: tuple[str, str], through: list | None) -> bool:
        """The common case in one statement: a token this session has not cached, allowed and spent.

        The token is checked with the keys the last statement saw, and the use is taken by
        the statement that also reads the transaction and the keys' version (SpentTable). If
        the keys changed since, the token is checked again with the new ones before anything
        is allowed: a refusal then is an error, and the use goes back with the statement.
        False: not this case (a refusal, or an answer of false), and nothing was spent: the
        caller takes the general path, which reads where we are first and refuses properly.
        """
        def check() -> Verified:
            verified = self.verifier.check_token(token)
            _check_through(verified, through)
            self.verifier.check_request(verified, *key)
            return verified

        try:
            verified = check()
        except CrumbError:
            return False
        self.verifier.spend(verified)
        assert self._spent.where is not None  # spend() raised unless a use was taken
        tx, keys = self._spent.where
        if keys != self._keys_version:
            self.verifier = self._new_verifier()
            self._keys_version = keys
            verified = check()
        if tx != self._tx:
            self._tx = tx
            self._cache.clear()
        entry = self._cache[token] = _Entry(verified)
        entry.answers[key] = entry.spent = True
        if self._log is not None:
            self._log.append(token, verified, *key)
        return True

    def claims(self, token: str | None) -> str:
        """crumb.claims(): the claims of the transaction's token as JSON text, spending nothing."""
        try:
            return json.dumps(self._entry(self._bounded(token)).verified.to_json())
        except Exception as e:  # noqa: BLE001 -- every failure is a refusal
            self._deny(e)

    # -- helpers

    def _refresh(self, cti: bytes) -> bool:
        """Where we are: a new transaction empties the cache; new keys replace the verifier.
        Returns whether this transaction's use of ``cti`` is recorded."""
        try:
            row = self._plpy.execute(self._where, [cti, self.hop or ""])[0]
        except self._plpy.SPIError as e:
            raise _store_error(e, "cannot read the transaction") from None
        if row["keys"] != self._keys_version:
            # Tokens already checked in this transaction stay checked (once per transaction);
            # the next check uses the new keys.
            self.verifier = self._new_verifier()
            self._keys_version = row["keys"]
        if row["tx"] != self._tx:  # a new transaction: nothing checked so far counts
            self._tx = row["tx"]
            self._cache.clear()
        return bool(row["mine"])

    def _entry(self, token: str) -> _Entry:
        """The transaction's entry for ``token`` (already _bounded), checked now if it has none."""
        entry = self._cache.get(token)
        mine = self._refresh(entry.verified.claims.cti if entry is not None else b"")
        entry = self._cache.get(token)  # gone if the transaction changed
        if entry is not None and entry.spent and not mine:
            entry = None  # its use was rolled back (to a savepoint): check and spend again
        if entry is None:
            entry = self._cache[token] = _Entry(self.verifier.check_token(token))
        return entry

    @staticmethod
    def _bounded(token: str | None) -> str:
        if not token:
            raise MissingToken("crumb.token is not set: SET LOCAL crumb.token = '<token>' in this transaction")
        if len(token) > MAX_TEXT:
            raise TooLarge(f"the token is larger than {MAX_TOKEN_BYTES} bytes")
        return token

    def _deny(self, e: Exception) -> NoReturn:
        if isinstance(e, self._plpy.SPIError) and not isinstance(e, CrumbError):
            # A statement this module ran failed for a reason of its own (canceled, out of memory):
            # refuse with that SQLSTATE, so the caller sees what happened.
            e = _store_error(e, "the database could not answer")
        if isinstance(e, CrumbError):
            code, message = e.code, e.message
        else:  # a bug must still be a refusal: the client gets the code, the server log the traceback
            code, message = "malformed", f"unexpected {type(e).__name__} while verifying (please report)"
            self._plpy.log("crumb: " + "".join(traceback.format_exception(e)))
        self._plpy.error(f"crumb: {code}: {message}", detail=code,
                         sqlstate=getattr(e, "sqlstate", None) or DENIED)
        raise AssertionError("plpy.error() returned")  # it raises; this line only tells the type checker


def _check_through(verified: Verified, through: list | None) -> None:
    if through is not None and verified.attested[:len(through)] != list(through):
        raise ChainIncomplete(
            f"the token did not pass through {', '.join(map(str, through))} "
            f"(attested by: {', '.join(verified.attested) or 'none'})")


def _text(value: str | None) -> str:
    if value is None:  # e.g. a row whose resource column is NULL: covered by no token
        raise ScopeDenied("no token grants a NULL resource or operation")
    return value
