"""A real PostgreSQL for the suite: one private cluster (initdb, pg_ctl) with crumb installed.

Without PostgreSQL and PL/Python the fixtures fail (ServiceMissing), they
never skip: tools/setup_test_env.sh installs them.
"""

from __future__ import annotations

import psycopg
import pytest

from crumb import SigningKey
from crumb.services.pg.install import install
from crumb.services.pg.keys import add
from crumb.tooling.pgserver import PostgresServer

HOPS = ("gateway", "ingest", "storage")

# The application's table: a reading may be written only with a token for its sensor.
READINGS = """
CREATE TABLE readings (id bigserial PRIMARY KEY, sensor text NOT NULL, value double precision NOT NULL);
ALTER TABLE readings ENABLE ROW LEVEL SECURITY;
CREATE POLICY publish ON readings FOR INSERT WITH CHECK (crumb.allows('/sensors/' || sensor, 'publish'));
CREATE POLICY read ON readings FOR SELECT USING (crumb.allows('/sensors/' || sensor, 'read'));
GRANT SELECT, INSERT ON readings TO app;
GRANT USAGE ON SEQUENCE readings_id_seq TO app;
"""


@pytest.fixture(scope="session")
def issuer() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def nodes() -> dict[str, SigningKey]:
    return {name: SigningKey.generate() for name in HOPS}


@pytest.fixture(scope="session")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def db(pg, issuer, nodes):
    """The cluster with crumb installed (the destination: no hop name), the issuer's key pinned,
    a role ``app`` without privileges beyond its table, and the readings table under RLS."""
    install(pg.dsn(), path=pg.python_path())
    add(pg.dsn(), [issuer.public], [(n, k.public) for n, k in nodes.items()])
    pg.create_role("app")
    pg.psql(READINGS)
    return pg


@pytest.fixture
def app(db):
    """A connection as the application role (RLS applies), in manual-commit mode."""
    with psycopg.connect(db.dsn("app")) as conn:
        yield conn


@pytest.fixture
def connect(db):
    """More connections as ``app``, closed at the end of the test."""
    conns: list[psycopg.Connection] = []

    def make() -> psycopg.Connection:
        conns.append(psycopg.connect(db.dsn("app")))
        return conns[-1]

    yield make
    for c in conns:
        c.close()
