-- The storage step in PostgreSQL: readings go in only under crumb's row-level security.
-- Run as a superuser after `crumb pg install --hop storage` (examples/chain/README.md):
--   psql "$DSN" -f examples/chain/storage.sql
-- The database then is the chain's last hop: it verifies each token itself, with the
-- issuer's key alone, and spends its single use in the transaction that stores the row.

DO $$ BEGIN
    CREATE ROLE crumb_storage LOGIN;  -- the storage worker connects as this role: RLS applies to it
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS readings (
    id          bigserial PRIMARY KEY,
    sensor      text NOT NULL,
    value       double precision NOT NULL,
    device      text NOT NULL,
    received_at double precision,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE readings ENABLE ROW LEVEL SECURITY;

-- A reading for sensor S needs a token granting publish on /sensors/S that
-- the gateway, then the ingest API, attested before it reached the database.
DROP POLICY IF EXISTS publish ON readings;
CREATE POLICY publish ON readings FOR INSERT
    WITH CHECK (crumb.allows('/sensors/' || sensor, 'publish', ARRAY['gateway', 'ingest'])
                AND device = crumb.claims() ->> 'sub');
-- Reading the table back takes a token for reading the sensor.
DROP POLICY IF EXISTS read ON readings;
CREATE POLICY read ON readings FOR SELECT USING (crumb.allows('/sensors/' || sensor, 'read'));

GRANT SELECT, INSERT ON readings TO crumb_storage;
GRANT USAGE ON SEQUENCE readings_id_seq TO crumb_storage;
