"""The crumb.keys table: keys synced from the issuer's ``GET /keys``, or pinned from files.

``sync`` fetches and validates the document with the services' own code
(``FetchedKeys.fetch``: size limit, strict JWKs, a key in both roles
refuses the whole set), then, in one transaction:

- every issuer key the document trusts (current or previous: a rotated key
  stays trusted while the issuer still publishes it, so tokens it signed keep
  verifying) and every node key is upserted as ``trusted``;
- a key synced earlier from the same URL that the document no longer lists
  becomes ``retired``: kept as a record, trusted no more;
- pinned keys, and keys from other issuers, are left alone.

A kid already in the table with another role or another key is refused
(nothing is written), as the verifier refuses two keys with one kid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from ...keys import PublicKey
from ..keyset import KeySet

PINNED = "pinned"


class KeyTableError(RuntimeError):
    """A key conflicts with one the table holds, or the database refused the change."""


def _upsert(cur: psycopg.Cursor, rows: Iterable[tuple[str, PublicKey, str | None]], source: str) -> list[str]:
    """Insert or refresh (role, key, name) rows as trusted; returns the kids written (hex)."""
    written = []
    for role, key, name in rows:
        have = cur.execute("SELECT role, public_key FROM crumb.keys WHERE kid = %s", (key.kid,)).fetchone()
        if have is not None and (have[0] != role or bytes(have[1]) != key.raw):
            raise KeyTableError(f"kid {key.kid.hex()} is already in crumb.keys as another "
                                f"{'key' if have[0] == role else 'role (' + have[0] + ')'}; nothing was changed")
        cur.execute(
            "INSERT INTO crumb.keys (kid, role, public_key, status, name, source) "
            "VALUES (%s, %s, %s, 'trusted', %s, %s) "
            "ON CONFLICT (kid) DO UPDATE SET status = 'trusted', name = COALESCE(excluded.name, crumb.keys.name), "
            "source = excluded.source, updated_at = now()",
            (key.kid, role, key.raw, name, source))
        written.append(key.kid.hex())
    return written


def add(dsn: str, issuer: Iterable[PublicKey] = (), nodes: Iterable[tuple[str | None, PublicKey]] = ()) -> dict:
    """Pin issuer keys and (name, key) node keys: trusted until removed by hand."""
    rows = [("issuer", k, None) for k in issuer] + [("node", k, name) for name, k in nodes]
    try:
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("LOCK TABLE crumb.keys IN SHARE ROW EXCLUSIVE MODE")
            written = _upsert(cur, rows, PINNED)
    except psycopg.Error as e:
        raise KeyTableError(str(e).strip()) from None
    return {"trusted": written}


def sync(dsn: str, issuer_url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Fill crumb.keys from ``GET /keys``; raises KeyFetchError (nothing changed) if the issuer fails."""
    from ..keyfetch import FetchedKeys

    url = issuer_url.rstrip("/")
    if not url.endswith("/keys"):
        url += "/keys"
    fetched = FetchedKeys(url, timeout=timeout)
    try:
        keyset: KeySet = fetched.fetch()
    finally:
        fetched.close()
    rows = [("issuer", k, None) for k in keyset.issuer.values()] + [("node", k, None) for k in keyset.nodes.values()]
    try:
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("LOCK TABLE crumb.keys IN SHARE ROW EXCLUSIVE MODE")  # one sync at a time
            written = _upsert(cur, rows, url)
            retired = [bytes(r[0]).hex() for r in cur.execute(
                "UPDATE crumb.keys SET status = 'retired', updated_at = now() "
                "WHERE source = %s AND status = 'trusted' AND NOT kid = ANY(%s) RETURNING kid",
                (url, [bytes.fromhex(k) for k in written])).fetchall()]
    except psycopg.Error as e:
        raise KeyTableError(str(e).strip()) from None
    return {"source": url, "issuer": [k.hex() for k in keyset.issuer], "nodes": [k.hex() for k in keyset.nodes],
            "retired": retired}


def listing(dsn: str) -> list[dict[str, Any]]:
    try:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT kid, role, status, name, source, updated_at FROM crumb.keys "
                                "ORDER BY role, status DESC, updated_at DESC").fetchall()
    except psycopg.Error as e:
        raise KeyTableError(str(e).strip()) from None
    return [{"kid": bytes(r[0]).hex(), "role": r[1], "status": r[2], "name": r[3], "source": r[4],
             "updated_at": r[5].isoformat()} for r in rows]
