"""The Redis replay store against a real redis-server."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from crumb import Verifier, mint
from crumb.errors import Replayed, StoreUnavailable
from crumb.services.replay_redis import RedisReplayStore


def cti() -> bytes:
    return os.urandom(8)


@pytest.fixture
def store(redis_server):
    s = RedisReplayStore(redis_server.url, prefix=f"t{os.urandom(4).hex()}:")
    yield s
    s.close()


def test_single_use_is_taken_once(store):
    now = store.fence_clear_at()  # a token issued once the new data set's fence has passed
    c = cti()
    assert store.consume(c, "", 1, now, now + 60) is True
    assert store.consume(c, "", 1, now, now + 60) is False
    assert store.consume(c, "", 1, now, now + 60) is False


def test_uses_are_counted_per_hop(store):
    now = store.fence_clear_at()  # a token issued once the new data set's fence has passed
    c = cti()
    assert store.consume(c, "gateway", 1, now, now + 60)
    assert store.consume(c, "ingest", 1, now, now + 60)
    assert store.consume(c, "", 1, now, now + 60)
    assert not store.consume(c, "gateway", 1, now, now + 60)


def test_multi_use_counts_down_atomically(store):
    now = store.fence_clear_at()  # a token issued once the new data set's fence has passed
    c = cti()
    assert [store.consume(c, "", 3, now, now + 60) for _ in range(5)] == [True, True, True, False, False]


def test_keys_expire_with_the_token(store):
    """A use is kept until exp + the data set's memory (leeway + clock spread) + 1 s (the 1 s: a use spent late
    in a second)."""
    iat, now = store.fence_clear_at(), int(time.time())
    c1, c3 = cti(), cti()
    store.consume(c1, "", 1, iat, now + 100)
    store.consume(c3, "", 3, iat, now + 100)
    for c in (c1, c3):
        ttl = store.client.ttl(store.key(c, ""))
        assert 100 + store.memory - 1 <= ttl <= 100 + store.memory + 1 and store.memory == store.leeway + 1
    # A token already past exp (a verifier with leeway may still consume) gets at least 1 s.
    c = cti()
    store.consume(c, "", 1, iat, now - store.memory - 30)
    assert 0 < store.client.ttl(store.key(c, "")) <= 1


def test_many_threads_racing_for_one_token_one_wins(redis_server):
    stores = [RedisReplayStore(redis_server.url, prefix="race:") for _ in range(4)]
    now = stores[0].fence_clear_at()
    for uses in (1, 5):
        c = cti()
        wins = []
        barrier = threading.Barrier(8)

        def go(s, c=c, uses=uses, wins=wins, barrier=barrier):
            barrier.wait()
            for _ in range(4):
                wins.append(s.consume(c, "", uses, now, now + 60))

        threads = [threading.Thread(target=go, args=(stores[i % 4],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins.count(True) == uses and len(wins) == 32


def test_fence_refuses_tokens_from_before_the_data_set(own_redis):
    """Refused: tokens a verifier could have accepted before the data set began, so issued before it,
    in its second (a use spent earlier in that second), or up to its memory after: its leeway (an issuer ahead)
    and the replicas' clock spread (a replica ahead of the one that opened it)."""
    now = int(time.time())
    store = RedisReplayStore(own_redis.url, clock=lambda: now)  # a new data set: fence at `now`
    assert store.fence_clear_at() == now + store.memory + 1
    for iat in (now - 10, now - 1, now, now + store.leeway, now + store.memory):
        with pytest.raises(Replayed, match="before the replay store's data set"):
            store.consume(cti(), "", 1, iat, now + 60)
        with pytest.raises(Replayed):
            store.consume(cti(), "", 2, iat, now + 60)
    assert store.consume(cti(), "", 1, now + store.memory + 1, now + 60)
    # A second replica joining later keeps the data set's fence, not its own start.
    later = RedisReplayStore(own_redis.url, clock=lambda: now + 100)
    assert later.consume(cti(), "", 1, now + store.memory + 1, now + 60)


def test_a_flushed_redis_sets_a_new_fence(own_redis):
    t = [1_800_000_000]
    store = RedisReplayStore(own_redis.url, clock=lambda: t[0])
    c = cti()
    t[0] += store.memory + 1  # past the first data set's fence
    assert store.consume(c, "", 1, t[0], t[0] + 60)
    own_redis_client = redis.Redis.from_url(own_redis.url)
    own_redis_client.flushall()
    t[0] += 5
    # The spent token would look fresh to an empty Redis: the new fence refuses it.
    with pytest.raises(Replayed):
        store.consume(c, "", 1, t[0] - 5, t[0] + 55)
    with pytest.raises(Replayed):
        store.consume(c, "", 3, t[0] - 5, t[0] + 55)
    with pytest.raises(Replayed):  # issued in the new data set's first second: maybe spent before the flush
        store.consume(cti(), "", 1, t[0], t[0] + 60)
    assert store.consume(cti(), "", 1, t[0] + store.memory + 1, t[0] + 60)
    assert int(own_redis_client.get(store.fence_key)) == t[0]


def test_fence_can_be_disabled_for_a_persistent_redis(redis_server):
    store = RedisReplayStore(redis_server.url, prefix="nofence:", fence=False)
    assert store.consume(cti(), "", 1, 1_000, 2**33)


def test_unreachable_redis_fails_closed_then_recovers(own_redis, issuer):
    # Leeway 0 and one replica (no clock spread): the fence lets tokens through from the second after it.
    verifier = Verifier([issuer.public], leeway=0, replay=RedisReplayStore(own_redis.url, leeway=0, clock_spread=0))
    time.sleep(1.01 - time.time() % 1)  # mint in a second after the fence was set
    spent = mint(issuer, scope=[("/r", "read")])
    verifier.verify(spent, "/r", "read")

    own_redis.stop()
    t0 = time.monotonic()
    for _ in range(3):
        with pytest.raises(StoreUnavailable) as e:
            verifier.verify(mint(issuer, scope=[("/r", "read")]), "/r", "read")
        assert e.value.code == "store_unavailable"
    # Only catches a hang: each call is bounded by the store's 0.5 s timeout; 10 x that for three calls.
    assert time.monotonic() - t0 < 3 * 10 * 0.5, "an unreachable store must fail, not wait"

    own_redis.start()  # same port, empty data set (no persistence)
    with pytest.raises(Replayed):  # the first call opens a new data set, whose fence refuses its own second
        verifier.verify(mint(issuer, scope=[("/r", "read")]), "/r", "read")
    time.sleep(1.01 - time.time() % 1)
    fresh = mint(issuer, scope=[("/r", "read")])
    assert verifier.verify(fresh, "/r", "read").claims.sub is None
    with pytest.raises(Replayed):
        verifier.verify(fresh, "/r", "read")
    # The token spent before the restart is not accepted again by the empty Redis.
    with pytest.raises(Replayed):
        verifier.verify(spent, "/r", "read")


def test_a_redis_that_refuses_writes_is_unavailable(own_redis):
    client = redis.Redis.from_url(own_redis.url)
    store = RedisReplayStore(own_redis.url)
    client.config_set("maxmemory", "1")  # noeviction: every write is refused (OOM)
    now = int(time.time())
    try:
        with pytest.raises(StoreUnavailable, match="OOM|maxmemory"):
            store.consume(cti(), "", 1, now, now + 60)
    finally:
        client.config_set("maxmemory", "0")
    assert store.consume(cti(), "", 1, store.fence_clear_at(), now + 60)


def test_a_stalled_redis_times_out(own_redis):
    store = RedisReplayStore(own_redis.url, timeout=0.3)
    os.kill(own_redis.proc.pid, 19)  # SIGSTOP: accepts nothing, answers nothing
    try:
        now = int(time.time())
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.consume(cti(), "", 1, now, now + 60)
        elapsed = time.monotonic() - t0
        # The timeout cannot fire early; the upper bound (10 x the timeout) only catches a hang.
        assert 0.3 <= elapsed < 10 * 0.3, elapsed
    finally:
        os.kill(own_redis.proc.pid, 18)  # SIGCONT
