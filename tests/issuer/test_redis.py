"""Several issuer processes behind Redis agree on nonces, rate limits and revocations;
with Redis down they refuse (store_unavailable) rather than admit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from crumb.issuer.protocol import build_request, parse_response

from .conftest import Fleet, crumb_cli, start_issuer

CBOR = {"content-type": "application/ace+cbor"}


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{url}/token", content=body, headers=CBOR, timeout=10)


def code(r: httpx.Response) -> str | None:
    return parse_response(r.content).code


@pytest.fixture(scope="module")
def pair(tmp_path_factory, redis_server):
    """Two issuer processes on two ports, one data directory, one Redis."""
    tmp = tmp_path_factory.mktemp("pair")
    a, config = start_issuer(tmp, redis_url=redis_server.url)
    from crumb.tooling.localissuer import LocalIssuer

    b = LocalIssuer(a.data, config, redis_url=redis_server.url).start()
    fleet = Fleet(a.data, a.url)
    yield fleet, a, b
    fleet.close()
    a.close()
    b.close()


def test_a_nonce_used_at_one_process_is_replayed_at_the_other(pair):
    fleet, a, b = pair
    creds = fleet.enroll("r-dev-1", "sensors")
    body = build_request("r-dev-1", creds.key, [("/sensors/t", "read")])
    assert post(a.url, body).status_code == 200
    assert code(post(b.url, body)) == "replayed"
    assert code(post(a.url, body)) == "replayed"


def test_rate_limit_is_shared(pair):
    fleet, a, b = pair
    creds = fleet.enroll("r-slow-1", "slow")  # burst 2, 0.01 tokens/s
    assert post(a.url, build_request("r-slow-1", creds.key, [("/slow/x", "read")])).status_code == 200
    assert post(b.url, build_request("r-slow-1", creds.key, [("/slow/x", "read")])).status_code == 200
    r = post(a.url, build_request("r-slow-1", creds.key, [("/slow/x", "read")]))
    assert code(r) == "rate_limited" and r.status_code == 400


def test_revocation_published_to_redis_reaches_every_process(pair, redis_server):
    fleet, a, b = pair
    creds = fleet.enroll("r-rev-1", "sensors")
    assert post(b.url, build_request("r-rev-1", creds.key, [("/sensors/t", "read")])).status_code == 200
    crumb_cli("device", "revoke", "r-rev-1", "--data", str(fleet.data), "--redis", redis_server.url, check=True)
    for url in (a.url, b.url):
        assert code(post(url, build_request("r-rev-1", creds.key, [("/sensors/t", "read")]))) == "revoked"


def test_revocation_in_redis_alone_is_honoured(pair, redis_server):
    # An issuer on another host shares Redis but not this registry file.
    import redis

    fleet, a, _b = pair
    creds = fleet.enroll("r-rev-2", "sensors")
    redis.Redis.from_url(redis_server.url).sadd("crumb:revoked", "r-rev-2")
    assert code(post(a.url, build_request("r-rev-2", creds.key, [("/sensors/t", "read")]))) == "revoked"


def test_processes_flag_serves_from_several_processes(tmp_path, redis_server):
    issuer, _ = start_issuer(tmp_path, redis_url=redis_server.url, processes=2)
    try:
        fleet = Fleet(issuer.data, issuer.url)
        creds = fleet.enroll("r-multi-1", "sensors")
        pids = set()
        for _ in range(20):
            # a new connection each time, so the kernel spreads them over both processes
            r = httpx.post(f"{issuer.url}/token", headers=CBOR,
                           content=build_request("r-multi-1", creds.key, [("/sensors/t", "read")]))
            assert r.status_code == 200, r.content
            pids.add(httpx.get(f"{issuer.url}/healthz").json()["pid"])
        assert len(pids) == 2  # both processes answered
        # more processes than half the CPUs: the banner says what that costs
        assert (f"2 processes on {os.cpu_count()} CPUs" in issuer.log_tail()) == (os.cpu_count() < 4)
        verdict = crumb_cli("audit", "verify", "--json", "--data", str(issuer.data), check=True).stdout
        import json
        chains = json.loads(verdict)["chains"]
        assert sum(c["records"] for c in chains) == 20 and all(c["ok"] for c in chains)
    finally:
        issuer.close()


def test_serve_refuses_several_processes_without_redis(tmp_path):
    r = crumb_cli("issuer", "serve", "--data", str(tmp_path), "--processes", "2")
    assert r.returncode == 2 and "--redis" in r.stderr


def test_redis_down_fails_closed_then_recovers(tmp_path):
    from crumb.tooling.localservices import RedisServer

    with RedisServer() as redis_server:
        issuer, _ = start_issuer(tmp_path, redis_url=redis_server.url)
        try:
            fleet = Fleet(issuer.data, issuer.url)
            creds = fleet.enroll("r-down-1", "sensors")
            assert post(issuer.url, build_request("r-down-1", creds.key, [("/sensors/t", "read")])).status_code == 200
            redis_server.stop()
            r = post(issuer.url, build_request("r-down-1", creds.key, [("/sensors/t", "read")]))
            resp = parse_response(r.content)
            assert r.status_code == 503 and resp.code == "store_unavailable" and resp.retry_after == 1
            assert not resp.tokens
            assert httpx.get(f"{issuer.url}/healthz").status_code == 503
            redis_server.start()  # same port
            deadline = time.monotonic() + 60  # generous: ends as soon as the issuer is back
            while True:
                r = post(issuer.url, build_request("r-down-1", creds.key, [("/sensors/t", "read")]))
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.content
            # Redis came back empty: the issuer re-published the revocations it knows.
            import redis

            crumb_cli("device", "revoke", "r-gone-1", "--data", str(issuer.data), check=True)
            redis_server.stop()
            redis_server.start()
            post(issuer.url, build_request("r-down-1", creds.key, [("/sensors/t", "read")]))  # reconnects
            deadline = time.monotonic() + 60  # generous: ends as soon as the revocation is back
            client = redis.Redis.from_url(redis_server.url)
            while not client.sismember("crumb:revoked", "r-gone-1") and time.monotonic() < deadline:
                post(issuer.url, build_request("r-down-1", creds.key, [("/sensors/t", "read")]))
                time.sleep(0.2)
            assert client.sismember("crumb:revoked", "r-gone-1")
            tail = crumb_cli("audit", "tail", "--json", "--data", str(issuer.data), check=True).stdout
            assert '"code":"store_unavailable"' in tail
        finally:
            issuer.close()


def _children(pid: int) -> list[int]:
    import os

    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry))
    return out


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path, redis_server):
    import os
    import signal

    issuer, _ = start_issuer(tmp_path, redis_url=redis_server.url, processes=2)
    try:
        parent = issuer.proc.pid
        answered, deadline = set(), time.monotonic() + 60  # generous: ends once both answered
        while len(answered) < 2 and time.monotonic() < deadline:  # both workers serving
            answered.add(httpx.get(f"{issuer.url}/healthz").json()["pid"])
        workers = sorted(answered)
        assert len(workers) == 2 and set(workers) <= set(_children(parent))
        os.kill(parent, signal.SIGKILL)  # our own child, by its id
        issuer.proc.wait()
        # Generous: each worker notices within a second and shuts down; a loaded machine is slower.
        deadline = time.monotonic() + 60
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [w for w in alive if os.path.exists(f"/proc/{w}") and
                     Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        assert not alive, f"workers {alive} outlived their supervisor"
    finally:
        issuer.close()


def test_one_turn_of_admissions_is_one_script_call_answered_per_request(redis_server):
    """Requests that reach the gate in one turn of the loop go to Redis together, and each gets its own answer,
    as if they had gone one by one in order."""
    import asyncio

    from crumb.issuer.codes import Refusal
    from crumb.issuer.gate import REVOKED_KEY, RedisGate
    from crumb.issuer.resp import RedisClient

    async def main() -> None:
        admin = RedisClient(redis_server.url)
        await admin.call("SADD", REVOKED_KEY, "batch-revoked")
        await admin.call("CONFIG", "RESETSTAT")
        gate = RedisGate(redis_server.url)
        await gate.client.call("PING")
        now = time.time()
        tag = str(now).encode()
        asks = [("batch-a", b"n1" + tag, 1.0, 5), ("batch-a", b"n1" + tag, 1.0, 5),   # a replay inside the batch
                ("batch-b", b"n2" + tag, 0.001, 1), ("batch-b", b"n3" + tag, 0.001, 1),  # the second is over rate
                ("batch-revoked", b"n4" + tag, 1.0, 5), ("batch-a", b"n5" + tag, 1.0, 5)]
        results = await asyncio.gather(*(gate.admit(d, n, 60, 1, rate, burst, now) for d, n, rate, burst in asks),
                                       return_exceptions=True)
        codes = [r.code if isinstance(r, Refusal) else r for r in results]
        assert codes == [None, "replayed", None, "rate_limited", "revoked", None]
        stats = (await admin.call("INFO", "commandstats")).decode()
        evalsha = [line for line in stats.splitlines() if line.startswith("cmdstat_evalsha:")]
        assert evalsha and evalsha[0].startswith("cmdstat_evalsha:calls=1,"), stats
        # Connected and the script loaded: the next turn's batch goes straight out, no task in between.
        assert gate._sha is not None
        more = [("batch-a", b"n1" + tag, 1.0, 5), ("batch-c", b"n6" + tag, 1.0, 5)]
        results = await asyncio.gather(*(gate.admit(d, n, 60, 1, rate, burst, now) for d, n, rate, burst in more),
                                       return_exceptions=True)
        assert [r.code if isinstance(r, Refusal) else r for r in results] == ["replayed", None]
        # A Redis that lost its scripts (restarted, SCRIPT FLUSH) answers NOSCRIPT: loaded again, then answered.
        await admin.call("SCRIPT", "FLUSH")
        results = await asyncio.gather(*(gate.admit(d, n, 60, 1, rate, burst, now) for d, n, rate, burst in
                                         [("batch-c", b"n6" + tag, 1.0, 5), ("batch-c", b"n7" + tag, 1.0, 5)]),
                                       return_exceptions=True)
        assert [r.code if isinstance(r, Refusal) else r for r in results] == ["replayed", None]
        stats = (await admin.call("INFO", "commandstats")).decode()
        assert "cmdstat_evalsha:calls=4," in stats, stats  # 1 + 1 + (NOSCRIPT, then again)
        await gate.close()
        await admin.close()

    asyncio.run(main())
