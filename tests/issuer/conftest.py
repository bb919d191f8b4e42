"""Fixtures for the issuer suite: a real issuer over HTTP on a free loopback port,
and a real redis-server, both started here. Nothing is skipped when a
service is missing: the fixture fails and says what to install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import load_or_create_master
from crumb.issuer.protocol import derive_device_key
from crumb.issuer.registry import Registry
from crumb.tooling.issuerclient import Credentials, IssuerClient
from crumb.tooling.localissuer import LocalIssuer
from crumb.tooling.localservices import RedisServer, ServiceMissing

from .policies import POLICY


class Fleet:
    """An issuer's data directory seen from the test: enroll devices, make clients."""

    def __init__(self, data: Path, url: str) -> None:
        self.data = data
        self.url = url
        self._clients: list[IssuerClient] = []

    def enroll(self, device: str, group: str | None = None) -> Credentials:
        d = DataDir(self.data).create()
        registry = Registry(d.registry)
        try:
            registry.add(device, group)
        finally:
            registry.close()
        return self.credentials(device)

    def credentials(self, device: str) -> Credentials:
        master = load_or_create_master(DataDir(self.data).root)
        return Credentials(device, derive_device_key(master, device), self.url)

    def client(self, device: str, group: str | None = "sensors", enroll: bool = True) -> IssuerClient:
        creds = self.enroll(device, group) if enroll else self.credentials(device)
        c = IssuerClient(creds)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()


def crumb_cli(*args: str, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `crumb` command line in a child process.

    The timeout only catches a hang: the slowest command here (`crumb bench issuer`)
    takes seconds, and a loaded machine may take several times that.
    """
    proc = subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True,
                          input=input, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"crumb {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    try:
        server.start()
    except ServiceMissing as e:
        pytest.fail(f"the issuer tests need redis-server: {e}", pytrace=False)
    yield server
    server.close()


def start_issuer(tmp: Path, policy: str = POLICY, **kw) -> tuple[LocalIssuer, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "policy.toml"
    config.write_text(policy)
    data = tmp / "data"
    DataDir(data).create()
    issuer = LocalIssuer(data, config, **kw)
    issuer.start()
    return issuer, config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One issuer process (memory stores) for a whole test module."""
    tmp = tmp_path_factory.mktemp("issuer")
    issuer, config = start_issuer(tmp)
    fleet = Fleet(issuer.data, issuer.url)
    fleet.issuer = issuer
    fleet.config = config
    yield fleet
    fleet.close()
    issuer.close()
    shutil.rmtree(tmp, ignore_errors=True)
