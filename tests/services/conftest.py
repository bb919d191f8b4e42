"""Fixtures for the service integrations: real redis-server, mosquitto and HTTP servers on loopback."""

from __future__ import annotations

import pytest

from crumb import SigningKey
from crumb.tooling.localservices import MosquittoServer, RedisServer

HOPS = ("gateway", "ingest", "storage")


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session; tests keep apart by key prefix or flush it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis():
    """A redis-server a test may stop and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto():
    with MosquittoServer() as server:
        yield server


@pytest.fixture(scope="session")
def issuer() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="session")
def nodes() -> dict[str, SigningKey]:
    return {name: SigningKey.generate() for name in HOPS}
