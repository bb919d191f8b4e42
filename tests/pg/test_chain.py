"""examples/chain with its storage step in PostgreSQL: gateway → ingest → the database.

Three uvicorn processes on loopback; the storage worker runs with
CRUMB_PG_DSN, so the database, installed as hop "storage", verifies each
token under the row-level security policy of examples/chain/storage.sql:
the token must grant publish on the sensor and have been attested by the
gateway, then ingest, checked with the issuer's key (and the hops' keys,
pinned in crumb.keys, for tokens that name hops by kid) alone.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from crumb import SigningKey, attest, mint, to_text
from crumb.keys import save
from crumb.replay import DEFAULT_LEEWAY
from crumb.services.pg.install import install
from crumb.services.pg.keys import add
from crumb.tooling.localservices import UvicornProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chain"
PATH = "/sensors/temp01/readings"
RES = "/sensors/temp01"
HOPS = ("gateway", "ingest", "storage")


@pytest.fixture(scope="module")
def chain(pg, tmp_path_factory):
    keys_dir = tmp_path_factory.mktemp("keys")
    issuer = SigningKey.generate()
    save(issuer, keys_dir / "issuer.key")
    nodes = {name: SigningKey.generate() for name in HOPS}
    for name, key in nodes.items():
        save(key, keys_dir / f"{name}.key")
    pg.psql("CREATE DATABASE chain")
    dsn = pg.dsn(dbname="chain")
    install(dsn, hop="storage", path=pg.python_path())
    add(dsn, [issuer.public], [(n, k.public) for n, k in nodes.items()])
    pg.psql((EXAMPLE / "storage.sql").read_text(), dbname="chain")
    common = {"CRUMB_ISSUER_PUB": str(keys_dir / "issuer.key.pub"),
              "CRUMB_NODE_PUBS": ",".join(str(keys_dir / f"{n}.key.pub") for n in HOPS)}
    procs = {}
    procs["storage"] = UvicornProcess("storage:app", app_dir=EXAMPLE, name="storage",
                                      env={**common, "CRUMB_PG_DSN": pg.dsn("crumb_storage", "chain")})
    procs["ingest"] = UvicornProcess("ingest:app", app_dir=EXAMPLE, name="ingest",
                                     env={**common, "CRUMB_NODE_KEY": str(keys_dir / "ingest.key"),
                                          "CRUMB_NEXT": procs["storage"].url})
    procs["gateway"] = UvicornProcess("gateway:app", app_dir=EXAMPLE, name="gateway",
                                      env={**common, "CRUMB_NODE_KEY": str(keys_dir / "gateway.key"),
                                           "CRUMB_NEXT": procs["ingest"].url})
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.start(), procs.values()))
        # The hops' in-memory replay stores began by now, and refuse tokens issued up to their leeway
        # after that (the restart fence): a deployment this fresh issues its first tokens after it.
        time.sleep(max(0.0, int(time.time()) + DEFAULT_LEEWAY + 1.01 - time.time()))
        yield issuer, nodes, {n: p.url for n, p in procs.items()}, pg
    finally:
        for p in procs.values():
            p.close()


def declared(issuer: SigningKey, nodes: dict, **kw) -> bytes:
    kw.setdefault("hop_refs", "kid")
    return mint(issuer, sub="dev-0001", scope=[(RES, "publish")], chain=[(n, nodes[n].public) for n in HOPS], **kw)


def through(token: bytes, nodes: dict, *hops: str) -> bytes:
    for hop in hops:
        token = attest(token, nodes[hop], hop)
    return token


def post(base: str, token: bytes | None, value=21.5) -> httpx.Response:
    """A reading; sent straight to storage, it carries the fields ingest would add (the device)."""
    headers = {"authorization": "Bearer " + to_text(token)} if token is not None else {}
    return httpx.post(base + PATH, json={"value": value, "device": "dev-0001"}, timeout=30, headers=headers)


def refused(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code, resp.text


def rows(pg) -> int:
    return int(pg.psql("SELECT count(*) FROM readings", dbname="chain"))


@pytest.mark.parametrize("refs", ["kid", "key"])
def test_a_reading_through_the_chain_is_stored_in_postgresql(chain, refs):
    issuer, nodes, url, pg = chain
    before = rows(pg)
    r = post(url["gateway"], declared(issuer, nodes, hop_refs=refs))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["database"] == "postgresql" and body["attested_by"] == ["gateway", "ingest"]
    assert body["device"] == "dev-0001" and body["sensor"] == "temp01"
    assert rows(pg) == before + 1


def test_the_database_refuses_what_skipped_a_hop(chain):
    issuer, nodes, url, pg = chain
    before = rows(pg)
    t = declared(issuer, nodes)
    refused(post(url["storage"], t), 403, "chain_incomplete")                               # nobody attested
    refused(post(url["storage"], through(t, nodes, "gateway")), 403, "chain_incomplete")    # ingest skipped
    # A token without a declared chain fits any hop for the verifier; the policy asks for the hops anyway.
    bare = mint(issuer, sub="dev-0001", scope=[(RES, "publish")])
    refused(post(url["storage"], bare), 403, "chain_incomplete")
    refused(post(url["storage"], None), 401, "missing_token")
    refused(post(url["storage"], b"\x00" * 20), 401, "malformed")
    assert rows(pg) == before
    # Refusals spend nothing: the token still goes the whole way.
    assert post(url["gateway"], t).status_code == 201


def test_the_database_spends_the_use_even_when_the_hops_are_bypassed(chain):
    issuer, nodes, url, _pg = chain
    arrived = through(declared(issuer, nodes), nodes, "gateway", "ingest")
    assert post(url["storage"], arrived).status_code == 201
    refused(post(url["storage"], arrived), 401, "replayed")


def test_a_token_from_an_unknown_issuer_is_refused_by_the_database(chain):
    _, nodes, url, _ = chain
    stranger = SigningKey.generate()
    refused(post(url["storage"], through(declared(stranger, nodes), nodes, "gateway", "ingest")), 401, "unknown_key")


def test_a_reading_filed_under_another_device_is_refused_by_the_policy(chain):
    issuer, nodes, url, _ = chain
    arrived = through(declared(issuer, nodes), nodes, "gateway", "ingest")
    r = httpx.post(url["storage"] + PATH, json={"value": 1, "device": "dev-0002"}, timeout=30,
                   headers={"authorization": "Bearer " + to_text(arrived)})
    refused(r, 403, "scope_denied")
