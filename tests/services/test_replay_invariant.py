"""The replay invariant, property-tested over both stores (issue 16).

A token is never accepted more times than its uses, whenever it is presented, to whichever
verifier sharing the store: whatever their leeways, the store's settings (its own leeway,
its restart fence, its size), the clocks (fractions of a second included; the issuer's up
to a leeway ahead of the verifiers', or behind), and restarts (a verifier process, which
forgets an in-memory store; a Redis that loses its data while its clients run on).

Redis is a real redis-server. Its clock cannot be set, so the test moves time for it:
advancing the verifiers' clock by d seconds takes d off every key's time to live
(``advance_redis``), which is what d seconds of waiting would do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import redis
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from crumb import SigningKey, Verifier, mint
from crumb.errors import CrumbError, Replayed, StoreUnavailable
from crumb.replay import DEFAULT_LEEWAY, MemoryReplayStore
from crumb.services.replay_redis import RedisReplayStore

T0 = 1_800_000_000
RES, OP = "/sensors/temp01", "read"
ISSUER = SigningKey(bytes(range(32)))
_prefixes = itertools.count()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Tok:
    iat_offset: int  # the issuer's clock against the verifiers' at T0: ahead (> 0) or behind
    ttl: int
    uses: int


@dataclass
class Scenario:
    leeways: list[int]            # one verifier each, all sharing the store
    store_leeways: list[int | None]  # the store's (Redis: each client's) leeway; None: its default
    default_store: bool           # memory: Verifier(replay=None) builds its own store
    fence: bool
    max_entries: int
    start_tenths: int
    tokens: list[Tok]
    events: list[tuple]


LEEWAY = st.sampled_from([0, 1, 5, 30, 60, 120, 300]) | st.integers(0, 400)


@st.composite
def scenarios(draw, kind: str) -> Scenario:
    n = draw(st.sampled_from([1, 2, 2, 3, 3]))  # mostly several verifiers sharing the store
    leeways = draw(st.lists(LEEWAY, min_size=n, max_size=n))
    # Mostly stores that keep at least their verifier's leeway (else there is little to test),
    # sometimes less, sometimes the store's default.
    delta = st.one_of(st.integers(0, 300), st.integers(-10, 300), st.none())
    store_leeways = [None if d is None else max(0, leeway + d) for leeway, d in
                     zip(leeways, draw(st.lists(delta, min_size=n, max_size=n)))]
    default_store = kind == "memory" and n == 1 and draw(st.booleans())
    fence = draw(st.booleans())
    tokens = draw(st.lists(st.builds(Tok, st.integers(-5, 5) | st.integers(-60, 60),
                                     st.integers(30, 120) | st.integers(1, 120), st.integers(1, 3)),
                           min_size=1, max_size=draw(st.sampled_from([1, 1, 2, 3]))))
    present = st.tuples(st.just("present"), st.integers(0, len(tokens) - 1), st.integers(0, n - 1))
    step = st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 10) | st.integers(1, 5000)),  # tenths of a second
        # to a token's expiry and past it (tenths of a second): where a store that forgets too soon shows
        st.tuples(st.just("past_exp"), st.integers(0, len(tokens) - 1), st.integers(-20, 100) | st.integers(0, 4000)),
        present, present, present,
        st.tuples(st.just("restart")),  # the verifiers' process restarts (memory: the store is new)
        # Redis loses its data; other tokens spend uses in the memory store (which sweeps expired
        # entries when full and every 256 inserts).
        st.tuples(st.just("flush" if kind == "redis" else "traffic")),
    )
    events = [draw(present), *draw(st.lists(step, min_size=4, max_size=40))]
    if not fence:
        # fence=False says the store never loses uses: a memory store must not restart, a Redis not lose data.
        events = [e for e in events if e[0] != ("restart" if kind == "memory" else "flush")]
    return Scenario(leeways, store_leeways, default_store, fence, draw(st.sampled_from([1, 2, 3, 4, 100_000])),
                    draw(st.integers(0, 9)), tokens, events)


def advance_redis(client: redis.Redis, prefix: str, seconds: float) -> None:
    """What ``seconds`` of waiting does to the keys under ``prefix``: their time to live runs down."""
    ms = round(seconds * 1000)
    for key in client.scan_iter(match=f"{prefix}*"):
        left = client.pttl(key)
        if left < 0:  # no expiry (fence, settings)
            continue
        if left <= ms:
            client.delete(key)
        else:
            client.pexpire(key, left - ms)


class World:
    """The verifiers of one scenario, on one store, and what they accepted."""

    def __init__(self, sc: Scenario, kind: str, clock: Clock, redis_url: str | None) -> None:
        self.sc, self.kind, self.clock, self.redis_url = sc, kind, clock, redis_url
        self.prefix = f"inv{next(_prefixes)}:"
        self.client = redis.Redis.from_url(redis_url) if redis_url else None
        self.verifiers: list[Verifier] | None = None
        self.refused: str | None = None

    def store_kw(self, i: int) -> dict:
        keep = self.sc.store_leeways[i]
        return {} if keep is None else {"leeway": keep}

    def start(self) -> None:
        """Start (or restart) the verifiers' process; a configuration refused leaves no verifiers."""
        sc, clock = self.sc, self.clock
        try:
            if self.kind == "memory" and sc.default_store:
                self.verifiers = [Verifier([ISSUER.public], clock=clock, leeway=sc.leeways[0])]
            elif self.kind == "memory":
                store = MemoryReplayStore(sc.max_entries, fence=sc.fence, clock=clock, **self.store_kw(0))
                self.verifiers = [Verifier([ISSUER.public], clock=clock, leeway=leeway, replay=store)
                                  for leeway in sc.leeways]
            else:
                self.verifiers = [
                    Verifier([ISSUER.public], clock=clock, leeway=leeway, replay=RedisReplayStore(
                        self.redis_url, prefix=self.prefix, fence=sc.fence, clock=clock, **self.store_kw(i)))
                    for i, leeway in enumerate(sc.leeways)]
        except ValueError as e:
            # A verifier may refuse a store that forgets uses sooner than it accepts tokens (and a
            # Redis client without the fence, a data set that does): nothing is accepted at all.
            # Only then: a configuration that keeps the invariant must be served.
            assert self.may_refuse(), e
            self.verifiers, self.refused = None, str(e)

    def may_refuse(self) -> bool:
        sc = self.sc
        keeps = [DEFAULT_LEEWAY if k is None else k for k in sc.store_leeways]
        if self.kind == "memory":
            return (not sc.default_store) and keeps[0] < max(sc.leeways)
        data_set = max(keeps)  # what the first clients ask for is what the data set keeps at most
        return any(k < v for k, v in zip(keeps, sc.leeways)) or (not sc.fence and min(keeps) < data_set)

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        if self.client is not None:
            advance_redis(self.client, self.prefix, seconds)

    def traffic(self) -> None:
        """256 other tokens spend a use each (issued far ahead, so no fence refuses them)."""
        if self.verifiers is None:
            return
        now = int(self.clock())
        for _ in range(256):
            try:
                self.verifiers[0].replay.consume(b"other%d" % next(_prefixes), "", 1, now + 10**6, now + 60)
            except CrumbError:  # full of live entries: store_unavailable
                pass

    def flush(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}*"):
            self.client.delete(key)

    def close(self) -> None:
        if self.client is not None:
            self.flush()
            self.client.close()


def run(sc: Scenario, kind: str, redis_url: str | None = None) -> None:
    # The verifiers start 500 s before the tokens are issued (so the fence leaves them alone until a
    # restart), at a fraction of a second the scenario picks.
    clock = Clock(T0 - 500 + sc.start_tenths / 10)
    tokens = [mint(ISSUER, scope=[(RES, OP)], ttl=t.ttl, uses=t.uses, now=T0 + t.iat_offset, cti=b"tok%d" % i)
              for i, t in enumerate(sc.tokens)]
    accepted = [0] * len(tokens)
    world = World(sc, kind, clock, redis_url)
    try:
        world.start()
        event("refused" if world.verifiers is None else "served")
        world.advance(500)
        for step in sc.events:
            if step[0] == "advance":
                world.advance(step[1] / 10)
            elif step[0] == "past_exp":
                exp = T0 + sc.tokens[step[1]].iat_offset + sc.tokens[step[1]].ttl
                if exp + step[2] / 10 > clock.t:
                    world.advance(round(exp + step[2] / 10 - clock.t, 1))
            elif step[0] == "restart":
                world.start()
            elif step[0] == "flush":
                world.flush()
            elif step[0] == "traffic":
                world.traffic()
            elif world.verifiers is not None:
                _, k, v = step
                try:
                    world.verifiers[v].verify(tokens[k], RES, OP)
                except CrumbError as e:
                    note(f"t={clock.t - T0:.1f} token {k} at verifier {v}: {e.code}")
                    event(f"refused: {e.code}")
                    continue
                accepted[k] += 1
                event("a token accepted")
                if accepted[k] > 1:
                    event("a token accepted more than once")
                note(f"t={clock.t - T0:.1f} token {k} at verifier {v}: accepted ({accepted[k]})")
                assert accepted[k] <= sc.tokens[k].uses, (
                    f"token {k} (iat {sc.tokens[k].iat_offset:+d}, ttl {sc.tokens[k].ttl}, uses "
                    f"{sc.tokens[k].uses}) accepted {accepted[k]} times, at t={clock.t - T0:.1f}")
        if world.refused is not None:
            note(f"configuration refused: {world.refused}")
    finally:
        world.close()


@settings(max_examples=600)
@given(scenarios("memory"))
def test_memory_store_never_accepts_a_token_more_than_its_uses(sc):
    run(sc, "memory")


@pytest.fixture(scope="module")
def redis_url(redis_server):
    return redis_server.url


def test_redis_store_never_accepts_a_token_more_than_its_uses(redis_url):
    @settings(max_examples=600)
    @given(scenarios("redis"))
    def check(sc):
        run(sc, "redis", redis_url)

    check()


# -- the combinations the property found in the code before issue 16, pinned

def spend(verifier: Verifier, token: bytes) -> str:
    """The code a presentation gets ("ok" when accepted)."""
    try:
        verifier.verify(token, RES, OP)
    except CrumbError as e:
        return e.code
    return "ok"


def sweep(store: MemoryReplayStore, clock: Clock) -> None:
    """Other traffic: 256 uses, so the store drops its expired entries (it sweeps every 256 inserts)."""
    for i in range(256):
        store.consume(b"other%d" % i, "", 1, int(clock()) + 10**6, int(clock()) + 60)


def test_a_verifier_refuses_a_store_that_forgets_sooner(redis_url):
    with pytest.raises(ValueError, match="keeps a spent use only 5 s past a token's exp.*up to 300 s"):
        Verifier([ISSUER.public], leeway=300, replay=MemoryReplayStore())
    with pytest.raises(ValueError, match="keeps a spent use only 5 s"):
        Verifier([ISSUER.public], leeway=300, replay=RedisReplayStore(redis_url, prefix="refuse:"))
    with pytest.raises(ValueError, match="does not say"):
        Verifier([ISSUER.public], replay=type("Store", (), {"consume": lambda *a: True})())
    assert Verifier([ISSUER.public], leeway=300).replay.leeway == 300  # its own store keeps as long
    assert Verifier([ISSUER.public]).leeway == DEFAULT_LEEWAY == 5


def test_the_issue_example_leeway_300_and_its_own_store():
    """Verifier(leeway=300) built a store that forgot a use 60 s past exp: the token came back at exp + 200."""
    clock = Clock(T0 - 500)
    verifier = Verifier([ISSUER.public], clock=clock, leeway=300)
    clock.t = T0
    token = mint(ISSUER, scope=[(RES, OP)], ttl=60, now=T0)
    assert spend(verifier, token) == "ok"
    clock.t = T0 + 60 + 200
    sweep(verifier.replay, clock)
    assert spend(verifier, token) == "replayed"


@pytest.mark.parametrize("ahead", [0, 5])
def test_a_restart_refuses_what_was_spent_before_it(ahead):
    """Found: leeway 0, a token spent and the process restarted within one second (the fence was that
    second, and let the token's iat through); and an issuer clock `ahead` within the leeway (the fence
    compared iat with the restart, but a verifier accepts iat up to now + leeway)."""
    clock = Clock(T0 - 500)
    leeway = ahead
    first = Verifier([ISSUER.public], clock=clock, leeway=leeway)
    clock.t = T0 + 0.2
    token = mint(ISSUER, scope=[(RES, OP)], now=T0 + ahead)
    assert spend(first, token) == "ok"
    clock.t = T0 + 0.7
    restarted = Verifier([ISSUER.public], clock=clock, leeway=leeway)
    assert spend(restarted, token) == "replayed"
    clock.t = T0 + ahead + 1
    fresh = mint(ISSUER, scope=[(RES, OP)], now=T0 + ahead + leeway + 1)  # past the fence: served
    assert spend(restarted, fresh) == "ok"


@pytest.mark.parametrize("ahead", [0, 5])
def test_a_flushed_redis_refuses_what_was_spent_before(redis_url, ahead):
    clock = Clock(T0 - 500)
    world = World(Scenario([ahead], [ahead], False, True, 1, 0, [], []), "redis", clock, redis_url)
    world.start()
    (verifier,) = world.verifiers
    world.advance(500.2)
    token = mint(ISSUER, scope=[(RES, OP)], now=T0 + ahead)
    assert spend(verifier, token) == "ok"
    world.flush()
    world.advance(0.5)
    assert spend(verifier, token) == "replayed"
    world.close()


def test_redis_remembers_a_use_as_long_as_its_longest_leeway_client_accepts(redis_url):
    """Found: clients of one data set with leeways 5 and 30; a use spent at the first was forgotten
    6 s past exp, and the second's verifier accepted the token again."""
    clock = Clock(T0 - 500)
    world = World(Scenario([5, 30], [5, 30], False, True, 1, 0, [], []), "redis", clock, redis_url)
    world.start()
    short, long = world.verifiers
    world.advance(500)
    token = mint(ISSUER, scope=[(RES, OP)], ttl=30, now=T0)
    assert spend(short, token) == "ok"
    world.advance(30 + 10)  # 10 s past exp: the long verifier would still accept it
    assert spend(long, token) == "replayed"
    assert int(world.client.get(world.prefix + "leeway")) == 30  # the data set keeps uses for its longest
    world.close()


def test_redis_client_needing_more_than_the_data_set_keeps(redis_url):
    """With the fence, a client asking for a longer memory raises it and moves the fence (uses spent
    under the shorter one may be gone); without it, the client cannot, and fails closed."""
    clock = Clock(T0)
    prefix = f"inv{next(_prefixes)}:"
    client = redis.Redis.from_url(redis_url)
    short = RedisReplayStore(redis_url, prefix=prefix, leeway=5, clock=clock)
    clock.t += 100
    RedisReplayStore(redis_url, prefix=prefix, leeway=30, clock=clock)
    assert int(client.get(prefix + "leeway")) == 30 and int(client.get(prefix + "fence")) == T0 + 100
    with pytest.raises(Replayed):  # issued within the longer leeway of the moved fence
        short.consume(b"c1", "", 1, T0 + 100 + 30, T0 + 200)
    with pytest.raises(ValueError, match="needs 60 s; without the fence"):
        RedisReplayStore(redis_url, prefix=prefix, leeway=60, fence=False, clock=clock)
    unfenced = RedisReplayStore(redis_url, prefix=prefix, leeway=30, fence=False, clock=clock)
    client.delete(prefix + "leeway", prefix + "fence")  # Redis lost its data...
    assert short.consume(b"c2", "", 1, T0 + 1000, T0 + 1060)  # ...and a short client opened the next data set
    with pytest.raises(StoreUnavailable, match="keeps spent uses 5 s past exp, and this client needs 30 s"):
        unfenced.consume(b"c3", "", 1, T0 + 1000, T0 + 1060)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
