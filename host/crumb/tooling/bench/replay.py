"""`crumb bench replay`: single-use holds across replicas sharing one Redis.

Starts its own redis-server on loopback, mints N single-use tokens, and
starts two verifier processes (each with a few threads, each thread with its
own Redis connection). Both processes are handed every token, in the same
order, and released together: each token is presented twice, once to each
process, at about the same moment. Exactly N presentations must be accepted
and N refused as ``replayed``; anything else is counted under ``errors``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections import Counter

import click

from ...extras import require

RESOURCE, OPERATION = "/sensors/temp01", "publish"


def _worker(index: int, issuer_public: bytes, redis_url: str, prefix: str, tokens: list[bytes], threads: int,
            ready, go, results) -> None:
    """One verifier process: verify its presentations on ``threads`` threads, report outcome counts."""
    from ...errors import CrumbError
    from ...keys import PublicKey
    from ...services.replay_redis import RedisReplayStore
    from ...verify import Verifier

    store = RedisReplayStore(redis_url, prefix=prefix, timeout=5.0)
    verifier = Verifier([PublicKey(issuer_public)], replay=store)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def run(share: list[bytes]) -> None:
        local: Counter[str] = Counter()
        for token in share:
            try:
                verifier.verify(token, RESOURCE, OPERATION)
                local["accepted"] += 1
            except CrumbError as e:
                local[e.code] += 1
            except Exception as e:  # noqa: BLE001 -- a bug must show up in the figures, not kill the run
                local[f"exception:{type(e).__name__}"] += 1
        with lock:
            counts.update(local)

    shares = [tokens[i::threads] for i in range(threads)]
    pool = [threading.Thread(target=run, args=(share,)) for share in shares]
    store.ping()  # connect before the start line
    ready.put(index)
    go.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put((index, dict(counts), time.perf_counter() - t0))


def run(tokens: int = 10_000, workers: int = 2, threads: int = 4, redis_url: str | None = None) -> dict:
    from ...keys import SigningKey
    from ...services.replay_redis import RedisReplayStore
    from ...token import mint
    from ..localservices import RedisServer

    server = None
    if redis_url is None:
        server = RedisServer().start()
        redis_url = server.url
    try:
        prefix = f"bench{os.urandom(4).hex()}:"
        # Open the replay data set (its restart fence) before minting, as a deployment would, and
        # mint once the fence has passed: it refuses tokens issued up to its leeway after it.
        setup = RedisReplayStore(redis_url, prefix=prefix)
        passed = int(setup.client.get(setup.fence_key)) + int(setup.client.get(setup.leeway_key)) + 1
        time.sleep(max(0.0, passed + 0.001 - time.time()))
        issuer = SigningKey.generate()
        minted = [mint(issuer, sub="dev-0001", scope=[(RESOURCE, OPERATION)], ttl=600) for _ in range(tokens)]

        ctx = multiprocessing.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_worker, args=(i, issuer.public.raw, redis_url, prefix, minted, threads,
                                                   ready, go, results), daemon=True)
                 for i in range(workers)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        t0 = time.perf_counter()
        go.set()
        reports = [results.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join(10)
        live_keys = sum(1 for _ in setup.client.scan_iter(match=f"{prefix}use:*", count=1000))
        version = setup.client.info("server").get("redis_version")
        setup.close()
    finally:
        if server is not None:
            server.close()

    total: Counter[str] = Counter()
    for _, counts, _ in sorted(reports):
        total.update(counts)
    accepted, replayed = total.pop("accepted", 0), total.pop("replayed", 0)
    presented = tokens * workers
    return {
        "tokens": tokens,
        "presentations": presented,
        "verifier_processes": workers,
        "threads_per_process": threads,
        "accepted": accepted,
        "replayed": replayed,
        "errors": sum(total.values()),
        "error_codes": dict(total),
        "accepted_per_process": [counts.get("accepted", 0) for _, counts, _ in sorted(reports)],
        "redis_keys_after": live_keys,
        "seconds": round(wall, 3),
        "presentations_per_s": round(presented / wall) if wall else None,
        "redis_version": version,
        "ok": accepted == tokens and replayed == presented - tokens and not total,
    }


def render(result: dict) -> str:
    lines = [
        (f"{result['tokens']:,} single-use tokens, each presented to {result['verifier_processes']} verifier "
        f"processes ({result['threads_per_process']} threads each) sharing one redis-server "
        f"{result['redis_version']}"),
        f"  accepted   {result['accepted']:>8,}   (per process: {', '.join(f'{n:,}' for n in result['accepted_per_process'])})",
        f"  replayed   {result['replayed']:>8,}",
        f"  errors     {result['errors']:>8,}   {result['error_codes'] or ''}",
        f"  time       {result['seconds']:>8} s   ({result['presentations_per_s']:,} presentations/s)",
        f"  result     {'OK: every token accepted exactly once' if result['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


@click.command("replay")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--tokens", default=10_000, show_default=True, type=click.IntRange(min=1), help="Single-use tokens.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(min=1), help="Threads per verifier process.")
@click.option("--redis", "redis_url", metavar="URL", help="Use this Redis instead of starting a private redis-server.")
def command(as_json: bool, tokens: int, threads: int, redis_url: str | None) -> None:
    """Two verifier processes race for single-use tokens in one real Redis: each must be accepted once.

    Exits 1 if any token was accepted twice or never, or any presentation failed otherwise.
    """
    require("tools", "crumb bench replay")
    result = run(tokens=tokens, threads=threads, redis_url=redis_url)
    click.echo(json.dumps(result, indent=1) if as_json else render(result))
    if not result["ok"]:
        raise SystemExit(1)
