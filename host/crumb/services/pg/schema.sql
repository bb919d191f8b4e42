-- crumb inside PostgreSQL: the schema `crumb pg install` applies (docs/postgres.md).
--
-- Every statement can run again: installing twice, or over an older
-- install, leaves one schema with the current functions and keeps the keys
-- and the spent uses. The installer runs this as a superuser (PL/Python is an
-- untrusted language) in one transaction, then records the settings.
--
-- The tables belong to the installing role and nobody else may touch them:
-- an application role that could delete from crumb.spent could replay tokens,
-- and one that could write crumb.settings could make the backend import other
-- code. The functions that read and write them are SECURITY DEFINER, with a
-- fixed search_path, so that the application needs only EXECUTE.

CREATE EXTENSION IF NOT EXISTS plpython3u;

CREATE SCHEMA IF NOT EXISTS crumb;
REVOKE ALL ON SCHEMA crumb FROM PUBLIC;
GRANT USAGE ON SCHEMA crumb TO PUBLIC;

-- name → value: python_path (where the backend imports crumb from, one
-- directory a line), hop, audience, leeway, log (the service name the
-- backend records its decisions under in crumb.log; empty: no log; all read
-- once per session), and
-- keys_version (see the trigger below).
CREATE TABLE IF NOT EXISTS crumb.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

-- Keys. role 'issuer' signs authority blocks; role 'node' only resolves the
-- 4-byte kids a token may name its hops by. A kid has one row, so one key
-- cannot hold both roles. Only status 'trusted' is used; a key its issuer no
-- longer publishes is kept as 'retired' (a record, trusted no more).
-- source: 'pinned' (crumb pg keys add) or the GET /keys URL it was synced from.
CREATE TABLE IF NOT EXISTS crumb.keys (
    kid        bytea PRIMARY KEY CHECK (length(kid) = 4),
    role       text NOT NULL CHECK (role IN ('issuer', 'node')),
    public_key bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    status     text NOT NULL CHECK (status IN ('trusted', 'retired')),
    name       text,
    source     text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Uses spent at this database, one row per (token id, hop): the primary key is
-- what makes single use hold. The row is written in the transaction that uses
-- the token, so a rollback unspends it, and a second transaction inserting the
-- same key waits for the first and then finds it spent (or free, after a
-- rollback). tx is the top-level transaction that last spent a use: a cached
-- verification is trusted only while this transaction's row is still there
-- (a ROLLBACK TO SAVEPOINT removes it). exp: unix seconds, for purge_spent(),
-- which scans the table: an index on exp would cost every use an index insert
-- to speed up a rare clean-up.
CREATE TABLE IF NOT EXISTS crumb.spent (
    cti  bytea NOT NULL,
    hop  text NOT NULL,
    used integer NOT NULL,
    exp  bigint NOT NULL,
    tx   xid8 NOT NULL,
    PRIMARY KEY (cti, hop)
);
-- The database's service log (`crumb pg install --log NAME`): one record per
-- accepted token, in crumb's audit record format and hash chain (crumb.auditchain:
-- hash = SHA-256(prev || seq as 8 bytes big-endian || body)). Appended by the
-- backend in the transaction that spends the use, so the record exists exactly
-- when the use (and the data it authorized) was committed. Refusals are errors,
-- whose transaction rolls back, and are not here: PostgreSQL's server log has
-- them (docs/audit-trail.md). Append-only for everyone, the owner included.
CREATE TABLE IF NOT EXISTS crumb.log (
    seq  bigint PRIMARY KEY,
    body bytea NOT NULL,
    prev bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE OR REPLACE FUNCTION crumb._log_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the crumb service log is append-only';
END
$$;
REVOKE ALL ON FUNCTION crumb._log_append_only() FROM PUBLIC;
CREATE OR REPLACE TRIGGER log_append_only BEFORE UPDATE OR DELETE ON crumb.log
    FOR EACH ROW EXECUTE FUNCTION crumb._log_append_only();
CREATE OR REPLACE TRIGGER log_no_truncate BEFORE TRUNCATE ON crumb.log
    FOR EACH STATEMENT EXECUTE FUNCTION crumb._log_append_only();

REVOKE ALL ON crumb.settings, crumb.keys, crumb.spent, crumb.log FROM PUBLIC;

-- Every change to crumb.keys bumps keys_version, in the same transaction: each
-- session compares it on every call and reloads its keys when it moved, so a
-- sync or a retirement applies from the next statement on, in every session,
-- while an unchanged key set costs no lookup at all.
CREATE OR REPLACE FUNCTION crumb._keys_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO crumb.settings AS s (name, value) VALUES ('keys_version', '1')
    ON CONFLICT (name) DO UPDATE SET value = (s.value::bigint + 1)::text;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION crumb._keys_changed() FROM PUBLIC;
CREATE OR REPLACE TRIGGER keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON crumb.keys
    FOR EACH STATEMENT EXECUTE FUNCTION crumb._keys_changed();

-- Loads crumb into this session's Python once: the directories recorded at
-- install go first on sys.path, then the backend object goes into GD (shared
-- by this session's PL/Python functions only).
CREATE OR REPLACE FUNCTION crumb._boot() RETURNS void
LANGUAGE plpython3u VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
import sys
if "crumb.backend" in GD:
    return
rows = plpy.execute("SELECT value FROM crumb.settings WHERE name = 'python_path'")
for entry in reversed(rows[0]["value"].splitlines() if rows.nrows() else []):
    if entry and entry not in sys.path:
        sys.path.insert(0, entry)
from crumb.services.pg.backend import Backend
GD["crumb.backend"] = Backend(plpy)
$$;
REVOKE ALL ON FUNCTION crumb._boot() FROM PUBLIC;

-- The verified claims as JSON, spending one use of the token at this hop;
-- a rejection is an error with SQLSTATE 42501 and the stable code as DETAIL.
CREATE OR REPLACE FUNCTION crumb.verify(token text, resource text, operation text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
if "crumb.backend" not in GD:
    plpy.execute("SELECT crumb._boot()")
return GD["crumb.backend"].verify(token, resource, operation)
$$;

-- The row-level security check behind crumb.allows(): the token is verified
-- (and a use spent) once per transaction; see backend.py.
CREATE OR REPLACE FUNCTION crumb._allows(token text, resource text, operation text, through text[])
RETURNS boolean
LANGUAGE plpython3u VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
if "crumb.backend" not in GD:
    plpy.execute("SELECT crumb._boot()")
return GD["crumb.backend"].allows(token, resource, operation, through)
$$;

-- For policies: the token the application set with SET LOCAL crumb.token.
-- through: hop names that must have attested, in this order (the token
-- passed through them before it reached the database).
CREATE OR REPLACE FUNCTION crumb.allows(resource text, operation text, through text[] DEFAULT NULL)
RETURNS boolean
LANGUAGE sql VOLATILE AS $$
SELECT crumb._allows(pg_catalog.current_setting('crumb.token', true), resource, operation, through)
$$;

-- The claims of the token in crumb.token, verified (as for allows(), once per
-- transaction) but not spent: for an application that wants to know who wrote
-- its rows, or which hops the token passed. It authorizes nothing by itself.
CREATE OR REPLACE FUNCTION crumb.claims() RETURNS jsonb
LANGUAGE plpython3u VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
if "crumb.backend" not in GD:
    plpy.execute("SELECT crumb._boot()")
return GD["crumb.backend"].claims(plpy.execute(
    "SELECT pg_catalog.current_setting('crumb.token', true) AS t")[0]["t"])
$$;

-- Spent uses of tokens expired more than `leeway` seconds ago can go: an
-- expired token is refused before its uses are looked at. Never less than the
-- verifier's own leeway (crumb.settings), which accepts a token that long past
-- exp: a use forgotten sooner could be spent again. Returns the count.
CREATE OR REPLACE FUNCTION crumb.purge_spent(leeway integer DEFAULT 300) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
WITH gone AS (
    DELETE FROM crumb.spent
    WHERE exp < extract(epoch FROM clock_timestamp())::bigint - GREATEST(leeway, COALESCE(
        (SELECT NULLIF(value, '')::integer FROM crumb.settings WHERE name = 'leeway'), 0))
    RETURNING 1
)
SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION crumb.purge_spent(integer) FROM PUBLIC;
