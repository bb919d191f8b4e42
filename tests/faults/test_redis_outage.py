"""Fault: the Redis replay store is stopped while two verifier replicas are busy, then restarted.

A real redis-server; two Verifier replicas, each with its own RedisReplayStore
client on it, as two processes of a service would have; four threads present
tokens picked from a growing pool (single-use and 3-use tokens, fresh and
already spent) to both replicas without pause, while the test stops Redis
and starts it again on the same port, empty (it persists nothing).

What must hold:
- while Redis is down every verification fails closed with
  ``store_unavailable`` (no acceptance, no other error);
- once Redis is back, tokens minted after its return are accepted again;
- across the whole run, no token is accepted more often than its uses:
  not during the outage, and not after it, when Redis has forgotten every
  use (the store's fence refuses the tokens minted before the new data set).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

from crumb import SigningKey, Verifier, mint
from crumb.errors import CrumbError
from crumb.services.replay_redis import RedisReplayStore
from crumb.tooling.localservices import RedisServer

from .helpers import wait_for

RESOURCE, OP = "/sensors/temp01", "publish"


class Traffic:
    def __init__(self, issuer: SigningKey, replicas: list[Verifier]) -> None:
        self.issuer = issuer
        self.replicas = replicas
        self.pool: list[tuple[bytes, int, bytes]] = []  # (cti, uses, token)
        self.accepted: Counter[bytes] = Counter()
        self.codes: Counter[str] = Counter()
        self.log: list[tuple[float, float, str]] = []  # (start, end, outcome) of each verify
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def mint_one(self) -> None:
        uses = random.choice((1, 1, 3))
        cti = os.urandom(8)
        tok = mint(self.issuer, sub="dev-r", scope=[(RESOURCE, OP)], uses=uses, cti=cti, ttl=300)
        with self.lock:
            self.pool.append((cti, uses, tok))

    def present(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            with self.lock:
                # Mostly the newest tokens, sometimes any older one: fresh uses and replays alike.
                cti, _, tok = self.pool[-rnd.randint(1, 4)] if rnd.random() < 0.7 else rnd.choice(self.pool)
            replica = rnd.choice(self.replicas)
            start = time.monotonic()
            try:
                replica.verify(tok, RESOURCE, OP)
            except CrumbError as e:
                outcome = e.code
            else:
                outcome = "accepted"
            with self.lock:
                self.codes[outcome] += 1
                self.log.append((start, time.monotonic(), outcome))
                if outcome == "accepted":
                    self.accepted[cti] += 1


# The verifiers and their store run with a 1 s leeway, not the default 5 s: a new data set refuses
# tokens issued up to its leeway after it began (the restart fence), and this test mints fresh tokens
# after the start and again after the restart, so with the default it spent ~12 s of its 15 s waiting
# for the fence to pass, twice. What must hold does not depend on the leeway's size; the default
# leeway's fence is test_restart_fence.py's and tests/services/test_replay_invariant.py's case.
LEEWAY = 1


def test_verification_fails_closed_without_redis_and_never_accepts_a_token_twice():
    issuer = SigningKey.generate()
    with RedisServer() as redis_server:
        replicas = [Verifier([issuer.public], leeway=LEEWAY,
                             replay=RedisReplayStore(redis_server.url, leeway=LEEWAY, timeout=0.5))
                    for _ in range(2)]
        time.sleep(1.01 - time.time() % 1)  # tokens from the next second on: past the data set's fence
        traffic = Traffic(issuer, replicas)
        for _ in range(8):
            traffic.mint_one()
        threads = [threading.Thread(target=traffic.present, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        try:
            def minted_and_accepted(n: int) -> bool:
                traffic.mint_one()
                return traffic.codes["accepted"] >= n

            wait_for(lambda: minted_and_accepted(20), "acceptances before the outage")
            redis_server.stop()
            down_at = time.monotonic()
            wait_for(lambda: traffic.codes["store_unavailable"] >= 20, "refusals during the outage")
            # Restarted in a later second than any use before the outage: a restart within the same second
            # is test_restart_fence.py's case (the fence is one second coarse).
            time.sleep(1.01 - time.time() % 1)
            up_at = time.monotonic()
            redis_server.start()  # the same port, an empty data set
            time.sleep(1.01 - time.time() % 1)
            fresh_from = len(traffic.pool)
            before = traffic.codes["accepted"]
            wait_for(lambda: minted_and_accepted(before + 20), "acceptances after Redis returned")
        finally:
            traffic.stop.set()
            for t in threads:
                t.join(60)
            for r in replicas:
                r.replay.close()

    uses = {cti: n for cti, n, _ in traffic.pool}
    over = {cti.hex(): (n, uses[cti]) for cti, n in traffic.accepted.items() if n > uses[cti]}
    assert not over, f"tokens accepted more often than their uses: {over}"
    # Only these outcomes, whatever the interleaving: a use, a spent use, the store down.
    assert set(traffic.codes) <= {"accepted", "replayed", "store_unavailable"}, traffic.codes
    # A verification made entirely while Redis was down was never accepted.
    during = [outcome for start, end, outcome in traffic.log if down_at <= start and end <= up_at]
    assert during and set(during) == {"store_unavailable"}, Counter(during)
    # After the restart, tokens minted since were accepted.
    fresh = {cti for cti, _, _ in traffic.pool[fresh_from:]}
    assert fresh & set(traffic.accepted)
