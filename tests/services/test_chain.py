"""examples/chain end to end: edge gateway → ingest API → storage worker, each its own uvicorn
process on loopback, sharing one real redis-server as replay store.

A token declared for the chain is accepted at each hop; skipping a hop,
reordering hops, replaying to an earlier hop, forwarding to a service outside
the chain and presenting it to a second replica after use are all rejected
with their codes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from crumb import SigningKey, attest, cbor, cose, mint, to_text
from crumb.keys import save
from crumb.services.replay_redis import RedisReplayStore
from crumb.token import Block, split
from crumb.tooling.localservices import RedisServer, UvicornProcess
from crumb.wire import BLOCK_ATTEST

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chain"
PATH = "/sensors/temp01/readings"
RES = "/sensors/temp01"
HOPS = ("gateway", "ingest", "storage")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    keys_dir = tmp_path_factory.mktemp("keys")
    issuer = SigningKey.generate()
    save(issuer, keys_dir / "issuer.key")
    nodes = {name: SigningKey.generate() for name in HOPS}
    for name, key in nodes.items():
        save(key, keys_dir / f"{name}.key")
    with RedisServer() as redis:
        common = {"CRUMB_ISSUER_PUB": str(keys_dir / "issuer.key.pub"), "CRUMB_REDIS": redis.url,
                  "CRUMB_NODE_PUBS": ",".join(str(keys_dir / f"{n}.key.pub") for n in HOPS)}
        procs: dict[str, UvicornProcess] = {}

        def service(name: str, app: str, **env: str) -> str:
            # Each process's socket is bound when it is made: its URL is known (and its port
            # ours) before anything starts, so each hop is told the next one's URL.
            procs[name] = UvicornProcess(app, app_dir=EXAMPLE, env={**common, **env}, name=name)
            return procs[name].url

        try:  # from the last hop back
            storage = service("storage", "storage:app", CRUMB_REPLICA="storage-a")
            service("storage-b", "storage:app", CRUMB_REPLICA="storage-b")
            # A real service that is not one of the token's hops.
            service("archive", "storage:app", CRUMB_REPLICA="archive", CRUMB_HOP="archive")
            ingest = service("ingest", "ingest:app", CRUMB_NODE_KEY=str(keys_dir / "ingest.key"), CRUMB_NEXT=storage)
            service("gateway", "gateway:app", CRUMB_NODE_KEY=str(keys_dir / "gateway.key"), CRUMB_NEXT=ingest)
            url = {name: p.url for name, p in procs.items()}
            with ThreadPoolExecutor(len(procs)) as pool:
                list(pool.map(lambda p: p.start(), procs.values()))
            # A new replay data set refuses tokens issued up to its leeway after it began (its restart
            # fence): a deployment this fresh issues its first tokens after that.
            store = RedisReplayStore(redis.url)
            time.sleep(max(0.0, store.fence_clear_at() - time.time()))
            store.close()
            yield issuer, nodes, url
        finally:
            for p in procs.values():
                p.close()


def declared(issuer: SigningKey, nodes: dict, **kw) -> bytes:
    """A token as the issuer's policy mints it: chain gateway → ingest → storage, hops by kid."""
    kw.setdefault("hop_refs", "kid")
    return mint(issuer, sub="dev-0001", scope=[(RES, "publish")],
                chain=[(n, nodes[n].public) for n in HOPS], **kw)


def through(token: bytes, nodes: dict, *hops: str) -> bytes:
    """The token as it leaves the given hops (Ed25519 is deterministic: the bytes the services forward)."""
    for hop in hops:
        token = attest(token, nodes[hop], hop)
    return token


def post(base: str, token: bytes, value=21.5) -> httpx.Response:
    return httpx.post(base + PATH, json={"value": value}, timeout=10,
                      headers={"authorization": "Bearer " + to_text(token)})


def rejected(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code


def test_health_is_public(deployment):
    _, _, url = deployment
    for base in url.values():
        assert httpx.get(base + "/healthz").text == "ok"


@pytest.mark.parametrize("refs", ["kid", "key"])
def test_a_declared_token_passes_every_hop(deployment, refs):
    issuer, nodes, url = deployment
    r = post(url["gateway"], declared(issuer, nodes, hop_refs=refs))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["attested_by"] == ["gateway", "ingest"] and body["replica"] == "storage-a"
    assert body["device"] == "dev-0001" and body["sensor"] == "temp01"


def test_replaying_the_same_token_is_refused_at_the_first_hop(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    assert post(url["gateway"], t).status_code == 201
    rejected(post(url["gateway"], t), 401, "replayed")


def test_a_second_replica_sharing_redis_refuses_a_used_token(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    assert post(url["gateway"], t).status_code == 201  # stored by storage-a
    rejected(post(url["storage-b"], through(t, nodes, "gateway", "ingest")), 401, "replayed")
    # The other way round: storage-b first, then storage-a refuses.
    t = declared(issuer, nodes)
    arrived = through(t, nodes, "gateway", "ingest")
    assert post(url["storage-b"], arrived).json()["replica"] == "storage-b"
    rejected(post(url["storage"], arrived), 401, "replayed")


def test_skipping_a_hop_is_chain_incomplete(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    rejected(post(url["ingest"], t), 403, "chain_incomplete")  # gateway skipped
    rejected(post(url["storage"], through(t, nodes, "gateway")), 403, "chain_incomplete")  # ingest skipped
    rejected(post(url["storage"], t), 403, "chain_incomplete")
    # Rejections cost nothing: the same token still goes through the whole chain.
    assert post(url["gateway"], t).status_code == 201


def test_reordered_hops_are_chain_invalid(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    tok = split(t)
    for hop, index in (("ingest", 1), ("gateway", 0)):  # ingest's attestation first, then gateway's
        p, _, payload, sig = cose.sign(nodes[hop], cose.BLOCK_PROTECTED, cbor.dumps([BLOCK_ATTEST, index]),
                                       tok.last_signature)
        tok.blocks.append(Block(p, payload, sig))
    rejected(post(url["storage"], tok.to_bytes()), 403, "chain_invalid")
    # A chain declared in another order does not fit these services either.
    other = mint(issuer, sub="dev-0001", scope=[(RES, "publish")], hop_refs="kid",
                 chain=[(n, nodes[n].public) for n in ("ingest", "gateway", "storage")])
    rejected(post(url["gateway"], other), 403, "chain_incomplete")
    rejected(post(url["ingest"], through(other, nodes, "ingest")), 403, "chain_invalid")


def test_replaying_to_an_earlier_hop_is_chain_invalid(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    rejected(post(url["gateway"], through(t, nodes, "gateway")), 403, "chain_invalid")
    rejected(post(url["gateway"], through(t, nodes, "gateway", "ingest")), 403, "chain_invalid")
    rejected(post(url["ingest"], through(t, nodes, "gateway", "ingest")), 403, "chain_invalid")


def test_forwarding_outside_the_chain_is_chain_invalid(deployment):
    issuer, nodes, url = deployment
    t = declared(issuer, nodes)
    for hops in ((), ("gateway",), ("gateway", "ingest")):
        rejected(post(url["archive"], through(t, nodes, *hops)), 403, "chain_invalid")


def test_an_attestation_by_the_wrong_key_is_chain_invalid(deployment):
    issuer, nodes, url = deployment
    impostor = {**nodes, "gateway": SigningKey.generate()}
    t = declared(issuer, nodes)
    tok = split(t)
    p, _, payload, sig = cose.sign(impostor["gateway"], cose.BLOCK_PROTECTED, cbor.dumps([BLOCK_ATTEST, 0]),
                                   tok.last_signature)
    tok.blocks.append(Block(p, payload, sig))
    rejected(post(url["ingest"], tok.to_bytes()), 403, "chain_invalid")


def test_the_ingest_api_still_validates_its_input(deployment):
    issuer, nodes, url = deployment
    r = post(url["gateway"], declared(issuer, nodes), value="hot")
    assert r.status_code == 422
