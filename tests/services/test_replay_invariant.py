"""The replay invariant, property-tested over both stores (issue 16).

A token is never accepted more times than its uses, whenever it is presented, to whichever
verifier sharing the store: whatever their leeways, the store's settings (its own leeway,
its restart fence, its size; Redis: each client's clock spread), the clocks (fractions of a
second included; the issuer's up to a leeway ahead of the verifiers', or behind; Redis
replicas' clocks as far apart as the data set's clock spread allows), and restarts (a
verifier process, which forgets an in-memory store; a Redis that loses its data while its
clients run on).

Redis is a real redis-server. Its clock cannot be set, so the test moves time for it:
advancing the verifiers' clock by d seconds takes d off every key's time to live
(``advance_redis``), which is what d seconds of waiting would do.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from crumb import SigningKey, Verifier, mint
from crumb.errors import CrumbError, Replayed, StoreUnavailable
from crumb.replay import DEFAULT_LEEWAY, MemoryReplayStore
from crumb.services.replay_redis import DEFAULT_CLOCK_SPREAD, RedisReplayStore

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
    # Redis: each client's clock_spread (None: its default), and each replica's clock against the
    # others' (tenths of a second), as far apart as the data set's memory covers.
    spreads: list[int | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


LEEWAY = st.sampled_from([0, 1, 5, 30, 60, 120, 300]) | st.integers(0, 400)


@st.composite
def scenarios(draw, kind: str, replicas: bool = False) -> Scenario:
    """A scenario; ``replicas``: Redis replicas on clocks apart, each client keeping its own leeway (the tightest
    the rule allows), so that only the clock spread stands between them and a token accepted twice."""
    n = draw(st.sampled_from([2, 3] if replicas else [1, 2, 2, 3, 3]))  # mostly several verifiers sharing the store
    # Replicas of one service share their configuration: one leeway.
    leeways = [draw(LEEWAY)] * n if replicas else draw(st.lists(LEEWAY, min_size=n, max_size=n))
    # Mostly stores that keep at least their verifier's leeway (else there is little to test),
    # sometimes less, sometimes the store's default.
    # (exactly the verifier's, or just above it, most often: the boundary is where a store forgets too soon).
    delta = st.just(0) if replicas else \
        st.one_of(st.just(0), st.integers(0, 2), st.integers(0, 300), st.integers(-10, 300), st.none())
    store_leeways = [None if d is None else max(0, leeway + d) for leeway, d in
                     zip(leeways, draw(st.lists(delta, min_size=n, max_size=n)))]
    default_store = kind == "memory" and n == 1 and draw(st.booleans())
    fence = draw(st.booleans())
    # iat: the issuer's clock near the verifiers', or about a leeway ahead of one of them (the edge of what it accepts)
    ahead = st.sampled_from(leeways).flatmap(lambda leeway: st.integers(leeway - 1, leeway + 2))
    tokens = draw(st.lists(st.builds(Tok, st.integers(-5, 5) | st.integers(-60, 60) | ahead,
                                     st.integers(30, 120) | st.integers(1, 120), st.integers(1, 3)),
                           min_size=1, max_size=draw(st.sampled_from([1, 1, 2, 3]))))
    present = st.tuples(st.just("present"), st.integers(0, len(tokens) - 1), st.integers(0, n - 1))
    step = st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 10) | st.integers(1, 5000)),  # tenths of a second
        # to a token's expiry and past it (tenths of a second): where a store that forgets too soon shows
        st.tuples(st.just("past_exp"), st.integers(0, len(tokens) - 1), st.integers(-20, 100) | st.integers(0, 4000)),
        # a token at a verifier in the last moments it accepts it, by its clock (tenths of a second before exp + leeway)
        st.tuples(st.just("edge"), st.integers(0, len(tokens) - 1), st.integers(0, n - 1), st.integers(-30, 5)),
        present, present, present,
        # a token at every verifier in turn: where verifiers that disagree on time show
        st.tuples(st.just("present_all"), st.integers(0, len(tokens) - 1), st.permutations(range(n))),
        st.tuples(st.just("restart")),  # the verifiers' process restarts (memory: the store is new)
        # Redis loses its data; other tokens spend uses in the memory store (which sweeps expired
        # entries when full and every 256 inserts).
        st.tuples(st.just("flush" if kind == "redis" else "traffic")),
    )
    events = [draw(present), *draw(st.lists(step, min_size=4, max_size=40))]
    if not fence:
        # fence=False says the store never loses uses: a memory store must not restart, a Redis not lose data.
        events = [e for e in events if e[0] != ("restart" if kind == "memory" else "flush")]
    spreads: list[int | None] = []
    offsets = [0] * n
    if kind == "redis":
        spread = st.none() | st.integers(0, 3)
        # Replicas: one spread for all, mostly seconds (the default, 1 s, leaves less room to be wrong in).
        spreads = [draw(st.sampled_from([None, 2, 3]) | spread)] * n if replicas else \
            draw(st.lists(spread, min_size=n, max_size=n))
        # The rule: replicas' clocks at most ceil(spread) apart, for the data set's memory
        # (its clients' longest leeway + ceil(clock_spread)) less the longest verifier leeway.
        keeps = [DEFAULT_LEEWAY if k is None else k for k in store_leeways]
        room = max(k + math.ceil(DEFAULT_CLOCK_SPREAD if c is None else c) for k, c in zip(keeps, spreads)) \
            - max(leeways)
        most = 10 * min(3, max(0, room))  # mostly as far apart as allowed: where a store too short shows
        offsets = draw(st.lists(st.sampled_from([0, most]) | st.integers(0, most), min_size=n, max_size=n))
        if replicas:  # the whole spread, between two of them
            offsets = draw(st.permutations([0, most, *offsets[2:]]))
    return Scenario(leeways, store_leeways, default_store, fence, draw(st.sampled_from([1, 2, 3, 4, 100_000])),
                    draw(st.integers(0, 9)), tokens, events, spreads, offsets)


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
        kw = {} if keep is None else {"leeway": keep}
        if self.sc.spreads and self.sc.spreads[i] is not None:
            kw["clock_spread"] = self.sc.spreads[i]
        return kw

    def replica_clock(self, i: int):
        """Replica i's clock: the scenario's, ahead by its offset."""
        offset = self.sc.offsets[i] / 10 if self.sc.offsets else 0.0
        return lambda: self.clock() + offset

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
                    Verifier([ISSUER.public], clock=self.replica_clock(i), leeway=leeway, replay=RedisReplayStore(
                        self.redis_url, prefix=self.prefix, fence=sc.fence, clock=self.replica_clock(i),
                        **self.store_kw(i)))
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
        memories = [k + math.ceil(DEFAULT_CLOCK_SPREAD if c is None else c) for k, c in zip(keeps, sc.spreads)]
        # Without the fence, a client that needs more than the data set keeps cannot raise it.
        return any(k < v for k, v in zip(keeps, sc.leeways)) or (not sc.fence and min(memories) < max(memories))

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

    def present(k: int, v: int) -> None:
        if world.verifiers is None:
            return
        try:
            world.verifiers[v].verify(tokens[k], RES, OP)
        except CrumbError as e:
            note(f"t={clock.t - T0:.1f} token {k} at verifier {v}: {e.code}")
            event(f"refused: {e.code}")
            return
        accepted[k] += 1
        event("a token accepted")
        if accepted[k] > 1:
            event("a token accepted more than once")
        note(f"t={clock.t - T0:.1f} token {k} at verifier {v}: accepted ({accepted[k]})")
        assert accepted[k] <= sc.tokens[k].uses, (
            f"token {k} (iat {sc.tokens[k].iat_offset:+d}, ttl {sc.tokens[k].ttl}, uses "
            f"{sc.tokens[k].uses}) accepted {accepted[k]} times, at t={clock.t - T0:.1f}")

    try:
        world.start()
        event("refused" if world.verifiers is None else "served")
        world.advance(500)
        for step in sc.events:
            if step[0] == "advance":
                world.advance(step[1] / 10)
            elif step[0] == "edge":  # to verifier v's last moments of accepting token k (by its clock), and there
                _, k, v, tenths = step
                offset = sc.offsets[v] / 10 if sc.offsets else 0.0
                at = T0 + sc.tokens[k].iat_offset + sc.tokens[k].ttl + sc.leeways[v] + tenths / 10 - offset
                if at > clock.t:
                    world.advance(round(at - clock.t, 1))
                present(k, v)
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
            elif step[0] == "present":
                present(step[1], step[2])
            else:  # present_all
                for v in step[2]:
                    present(step[1], v)
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


def test_redis_replicas_on_clocks_apart_never_accept_a_token_more_than_its_uses(redis_url):
    @settings(max_examples=500)
    @given(scenarios("redis", replicas=True))
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
    assert int(world.client.get(world.prefix + "leeway")) == 31  # the data set keeps uses for its longest (+ 1 s spread)
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
    assert int(client.get(prefix + "leeway")) == 31 and int(client.get(prefix + "fence")) == T0 + 100
    with pytest.raises(Replayed):  # issued within the longer memory (leeway + 1 s clock spread) of the moved fence
        short.consume(b"c1", "", 1, T0 + 100 + 31, T0 + 200)
    with pytest.raises(ValueError, match=r"needs 61 s \(leeway 60 \+ clock spread 1\); without the fence"):
        RedisReplayStore(redis_url, prefix=prefix, leeway=60, fence=False, clock=clock)
    unfenced = RedisReplayStore(redis_url, prefix=prefix, leeway=30, fence=False, clock=clock)
    client.delete(prefix + "leeway", prefix + "fence")  # Redis lost its data...
    assert short.consume(b"c2", "", 1, T0 + 1000, T0 + 1060)  # ...and a short client opened the next data set
    with pytest.raises(StoreUnavailable, match="keeps spent uses 6 s past exp, and this client needs 31 s"):
        unfenced.consume(b"c3", "", 1, T0 + 1000, T0 + 1060)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def test_redis_replicas_whose_clocks_differ_by_a_fraction_of_a_second(redis_url):
    """Found: replicas half a second apart, default settings. The one ahead spent a token issued a
    leeway ahead of its clock, Redis lost its data, and the one behind opened the new data set with a
    fence a second earlier than the other's clock: the token passed the fence at the first again."""
    clock = Clock(T0 - 500)
    prefix = f"inv{next(_prefixes)}:"
    client = redis.Redis.from_url(redis_url)

    def replica(offset: float) -> Verifier:
        at = lambda: clock() + offset  # this replica's clock
        return Verifier([ISSUER.public], clock=at, replay=RedisReplayStore(redis_url, prefix=prefix, clock=at))

    behind, ahead = replica(0.0), replica(0.5)
    clock.t = T0 + 0.6  # ahead reads T0 + 1.1
    token = mint(ISSUER, scope=[(RES, OP)], now=T0 + 1 + DEFAULT_LEEWAY)  # an issuer a leeway ahead of it
    assert spend(ahead, token) == "ok"
    for key in client.scan_iter(match=f"{prefix}*"):  # Redis restarts without its data
        client.delete(key)
    clock.t = T0 + 0.8
    assert spend(behind, mint(ISSUER, scope=[(RES, OP)], now=T0 - 100, ttl=600)) == "replayed"  # opens it
    assert spend(ahead, token) == "replayed"
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


def test_redis_replicas_seconds_apart_within_their_clock_spread(redis_url):
    """Found: replicas 3 s apart (clock_spread=3), each keeping its leeway. A use spent at the one ahead
    expired 3 s early by the other's clock, which still accepted the token."""
    clock = Clock(T0 - 500)
    world = World(Scenario([5, 5], [5, 5], False, True, 1, 0, [Tok(0, 60, 1)], [], [3, 3], [30, 0]), "redis",
                  clock, redis_url)
    world.start()
    ahead, behind = world.verifiers
    world.advance(500)
    token = mint(ISSUER, scope=[(RES, OP)], ttl=60, now=T0)
    assert spend(ahead, token) == "ok"
    world.advance(60 + 5 - 0.5)  # the last half second `behind` accepts the token, by its clock
    assert spend(behind, token) == "replayed"
    world.close()
