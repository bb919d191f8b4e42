# ucrumb.client: cache, clock, backoff and errors, on both runtimes.
#
# The client talks to a scripted issuer that speaks the /token wire format
# (host/crumb/issuer/protocol.py): it checks the request's MAC and device
# time like the real one and answers in its encodings, or with whatever a
# case scripts (garbage, HTTP errors, refusals). The device's ticks are a
# counter the case advances, so expiry, refresh and backoff are exact and
# nothing sleeps. The real issuer is exercised by test_device_e2e.py.
from cases import raises
from ucrumb import cbor
from ucrumb import client as C
from ucrumb.http import HTTPError
from ucrumb.mac import hmac_sha256

KEY = bytes(range(32))
T0 = 1800000000
RES, OP = "/sensors/temp01", "read"
_REAL_TICKS = C.ticks_ms


# PROTOCOL.md §11's keys, written out here (the scripted issuer is a second reading of the spec).
TIME, TOKENS, USES, CODE, RETRY = -65537, -65538, -65539, -65540, -65541


def decode_request(body):
    # A device request as a dict: scope ([[resource, op], ...]), time, count, nonce, audience,
    # client_id, after checking its MAC (the last 16 bytes, over every byte before them).
    body = bytes(body)
    assert body[-16:] == hmac_sha256(KEY, body[:-16])[:16], "bad MAC"
    m = cbor.loads(body)
    assert sorted(m) == sorted(k for k in (5, 9, 24, -65537) if k in m), m
    block = m[-65537]
    scope = m[9]
    if type(scope) is bytes:
        scope = cbor.loads(scope)
    else:
        scope = [e.split("|") for e in scope.split(" ")]
    return {"scope": scope, "time": int.from_bytes(block[:4], "big"), "count": block[4], "nonce": block[5:-16],
            "audience": m.get(5), "client_id": m[24]}


class Issuer:
    def __init__(self, ttl=60, uses=1, max_skew=60, max_batch=32):
        self.time = T0
        self.ttl = ttl
        self.uses = uses
        self.max_skew = max_skew
        self.max_batch = max_batch
        self.requests = []  # every request, as decode_request() reads it
        self.script = []  # per request: None (answer normally), (status, headers, body) or an exception
        self.n = 0

    def handle(self, body):
        req = decode_request(body)
        self.requests.append(req)
        if self.script:
            r = self.script.pop(0)
            if r is not None:
                if isinstance(r, Exception):
                    raise r
                return r
        if req["time"] < self.time - self.max_skew or req["time"] > self.time + self.max_skew:
            return self.refusal(400, "stale_time")
        count = req["count"]
        scopes = req["scope"]
        if count * len(scopes) > self.max_batch:
            return self.refusal(400, "too_large")
        items = []
        for s in scopes:
            for _ in range(count):
                self.n += 1
                items.append([b"tok-%d" % self.n, self.ttl, self.uses])
        if count > 1 or len(scopes) > 1:
            resp = {34: 1, TIME: self.time, TOKENS: items}
        else:
            resp = {1: items[0][0], 2: self.ttl, 34: 1, TIME: self.time}
            if self.uses != 1:
                resp[USES] = self.uses
        return 200, {}, cbor.dumps(resp)

    def refusal(self, status, code, retry_after=None, time=None):
        m = {30: 1, 31: "scripted " + code, TIME: self.time if time is None else time, CODE: code}
        if retry_after is not None:
            m[RETRY] = retry_after
        return status, {}, cbor.dumps(m)


class Client(C.Client):
    def __init__(self, issuer, **kw):
        super().__init__("http://issuer.test", "dev-0001", KEY, **kw)
        self.issuer = issuer
        self.posts = 0

    def _post(self, body, max_body):
        self.posts += 1
        return self.issuer.handle(body)


class Ticks:
    def __init__(self, start):
        self.t = start

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t = (self.t + ms) & 0x3FFFFFFF


def ticking(start=5000):
    # Run the case with the client's ticks_ms replaced by a counter.
    def wrap(fn):
        def run():
            t = Ticks(start)
            C.ticks_ms = t
            try:
                fn(t)
            finally:
                C.ticks_ms = _REAL_TICKS

        return run

    return wrap


def synced(issuer=None, **kw):
    # A client that has been through its first exchange (clock synced).
    c = Client(issuer or Issuer(), **kw)
    c.prefetch([("/warm", "up")], 1)
    c._cache.clear()
    c.round_trips = 0
    c.posts = 0
    c.issuer.requests = []
    return c


# -- clock ------------------------------------------------------------------


@ticking()
def test_first_request_syncs_from_stale_time_refusal(t):
    iss = Issuer()
    c = Client(iss)
    assert c.now() == 0
    tok = c.token(RES, OP)
    assert tok == b"tok-1"
    assert c.round_trips == 2
    assert iss.requests[0]["time"] == 0  # no RTC: the first request carries time 0
    assert iss.requests[1]["time"] == T0  # the retry carries the issuer's time
    assert iss.requests[0]["nonce"] != iss.requests[1]["nonce"]  # a fresh nonce for the retry
    assert c.now() == T0


@ticking()
def test_clock_follows_ticks(t):
    c = synced()
    t.advance(90500)
    assert c.now() == T0 + 90
    c.issuer.time = T0 + 90
    c.token(RES, OP)
    assert c.issuer.requests[-1]["time"] == T0 + 90
    assert c.round_trips == 1  # in sync: no refusal


@ticking()
def test_issuer_clock_jump_costs_one_retry(t):
    c = synced()
    c.token(RES, OP)
    c.issuer.time = T0 + 3600  # the issuer's clock jumps an hour
    c._cache.clear()
    c.round_trips = 0
    assert c.token(RES, OP)
    assert c.round_trips == 2 and c.now() == T0 + 3600
    c.issuer.time = T0 - 7200  # and back, two hours
    c._cache.clear()
    c.round_trips = 0
    assert c.token(RES, OP)
    assert c.round_trips == 2 and c.now() == T0 - 7200


@ticking()
def test_clock_jump_does_not_touch_cached_expiry(t):
    # Cached tokens expire by ticks: an issuer time jump changes nothing.
    c = synced()
    c.token(RES, OP)
    c.issuer.time = T0 + 10 ** 6
    assert c.token(RES, OP) == b"tok-3"  # from the cache, no exchange
    assert c.round_trips == 1


@ticking()
def test_still_stale_after_resync_is_clock_unsynced(t):
    iss = Issuer()
    c = Client(iss)
    iss.script = [None, iss.refusal(401, "stale_time")]
    e = raises(C.ClockUnsynced, c.token, RES, OP)
    assert e.code == "stale_time" and c.round_trips == 2


@ticking()
def test_refusal_without_time_cannot_sync(t):
    iss = Issuer()
    c = Client(iss)
    iss.script = [(401, {}, cbor.dumps({CODE: "stale_time", 31: "no time"})),
                  (401, {}, cbor.dumps({CODE: "stale_time", 31: "no time"}))]
    raises(C.ClockUnsynced, c.token, RES, OP)
    assert c.now() == 0


# The device adopts an issuer time only inside its sane range (PROTOCOL.md
# §11.5, docs/device.md "Clock"): 2026-01-01 to 2100-01-01, 00:00 UTC. One
# spoofed answer outside it must neither be adopted nor stop the next sync.
TIME_MIN, TIME_MAX = 1767225600, 4102444800
ABSURD_TIMES = (2**64 - 1, 2**32, TIME_MAX + 1, TIME_MIN - 1, 0, -1, -(2**64), None, True, b"\x00", "1800000000",
                [T0], {})


def spoofed(time, code=None):
    # An answer whose only fault is its time: one token (batch=1), or a refusal.
    if code:
        return 400, {}, cbor.dumps({30: 1, 31: "spoofed", TIME: time, CODE: code})
    return 200, {}, cbor.dumps({1: b"spoofed", 2: 60, 34: 1, TIME: time})


@ticking()
def test_absurd_issuer_time_is_refused_and_the_next_answer_syncs(t):
    for bad in ABSURD_TIMES:
        for code in (None, "stale_time", "rate_limited"):
            c = Client(Issuer(), batch=1)  # never synced: the spoofed answer would be its first time
            c.issuer.script = [spoofed(bad, code)]
            e = raises(C.IssuerUnavailable, c.token, RES, OP)
            assert e.code == "bad_time" and "time" in str(e), (bad, code, e.code, str(e))
            assert c.now() == 0 and c.cached(RES, OP) == 0  # not adopted, nothing cached
            assert c.retry_in() > 0  # a failure like garbage: the client backs off
            t.advance(c.retry_in())
            assert c.token(RES, OP) == b"tok-1"  # the real issuer: stale_time with its time, then the token
            assert c.now() == T0 and c.issuer.requests[-1]["time"] == T0, (bad, code)


@ticking()
def test_absurd_issuer_time_leaves_a_synced_clock_alone(t):
    for bad in ABSURD_TIMES:
        c = synced(batch=1)
        c.issuer.script = [spoofed(bad)]
        assert raises(C.IssuerUnavailable, c.token, RES, OP).code == "bad_time"
        assert c.now() == T0
        wait = c.retry_in()  # random, up to 1000 ms: the clock may cross into the next second
        t.advance(wait)
        assert c.token(RES, OP)
        # Still in sync (no stale_time round trip): the issuer's time plus the wait.
        assert c.round_trips == 2 and c.issuer.requests[-1]["time"] == T0 + wait // 1000


@ticking()
def test_range_ends_are_adopted_and_a_far_time_costs_one_retry(t):
    # Inside the range a spoofed time cannot be told from a real one: it is
    # adopted, the next request carries it, and the real issuer's stale_time
    # refusal (with its own time) resyncs the client within that same call.
    for edge in (TIME_MIN, TIME_MAX):
        c = synced(batch=1)
        c.issuer.script = [spoofed(edge)]
        assert c.token(RES, OP) == b"spoofed"
        assert c.now() == edge
        c.round_trips = 0
        assert c.token(RES, OP)
        assert c.round_trips == 2 and c.now() == T0
        assert [r["time"] for r in c.issuer.requests[-2:]] == [edge, T0]


@ticking()
def test_absurd_token_life_is_not_a_token_response(t):
    # expires_in is bounded too (1 s to 1 day, the issuer policy's bound): a
    # longer life would overflow MicroPython's ticks arithmetic.
    for life in (2**64 - 1, 2**31, 86401, 0, -1):
        c = synced(batch=1)
        c.issuer.script = [(200, {}, cbor.dumps({1: b"tok", 2: life, 34: 1, TIME: T0}))]
        e = raises(C.IssuerUnavailable, c.token, RES, OP)
        assert e.code == "issuer_unavailable" and "not a token response" in str(e), (life, str(e))
    c = synced(batch=1)
    c.issuer.script = [(200, {}, cbor.dumps({1: b"day", 2: 86400, 34: 1, TIME: T0}))]
    assert c.token(RES, OP) == b"day"


@ticking(start=0x3FFFFFFF - 20000)
def test_ticks_wrap_around(t):
    # ticks_ms() wraps (every 2**30 ms on MicroPython): clock and expiry follow.
    c = synced(Issuer(ttl=60))
    assert c.token(RES, OP) == b"tok-2"
    t.advance(30000)  # past the wrap
    assert t.t < 20000
    assert c.now() == T0 + 30
    assert c.token(RES, OP) == b"tok-3"  # still valid
    t.advance(25000)  # 55 s after issue: inside the 5 s margin
    c.issuer.time = T0 + 55
    assert c.token(RES, OP) == b"tok-6"  # the old ones are dropped, a new batch fetched
    assert c.round_trips == 2


# -- cache --------------------------------------------------------------------


@ticking()
def test_batch_of_single_use_tokens(t):
    c = synced()
    seen = [c.token(RES, OP) for _ in range(8)]
    assert seen == [b"tok-%d" % i for i in range(2, 10)]  # each handed out once
    assert c.round_trips == 2
    assert c.issuer.requests[0]["count"] == 4 and c.issuer.requests[0]["scope"] == [[RES, OP]]


@ticking()
def test_hundred_calls_round_trips(t):
    c = Client(Issuer())
    for _ in range(100):
        c.token(RES, OP)
    assert c.round_trips == 26  # 25 batches of 4, plus the one stale-time refusal at boot


@ticking()
def test_uses_are_counted(t):
    c = synced(Issuer(uses=3), batch=1)
    got = [c.token(RES, OP) for _ in range(7)]
    assert got == [b"tok-2"] * 3 + [b"tok-3"] * 3 + [b"tok-4"]
    assert c.round_trips == 3
    assert c.cached(RES, OP) == 2


@ticking()
def test_token_used_up_mid_sequence(t):
    # Tokens with 2 uses in batches of 2: every switch happens exactly when a
    # token's uses are spent, and no token is handed out more than its uses.
    c = synced(Issuer(uses=2), batch=2)
    counts = {}
    for _ in range(11):
        tok = c.token(RES, OP)
        counts[tok] = counts.get(tok, 0) + 1
    assert max(counts.values()) == 2
    assert sum(counts.values()) == 11 and len(counts) == 6
    assert c.round_trips == 3


@ticking()
def test_never_hands_out_an_expired_token(t):
    c = synced(Issuer(ttl=60), margin=5)
    assert c.token(RES, OP) == b"tok-2"
    t.advance(54999)
    c.issuer.script = [HTTPError("down")] * 4
    assert c.token(RES, OP) == b"tok-3"  # 1 ms inside the margin: still served (refresh failed)
    t.advance(1)
    raises(C.IssuerUnavailable, c.token, RES, OP)  # at the margin: never served
    assert c.cached(RES, OP) == 0


@ticking()
def test_margin_scales_down_for_short_tokens(t):
    # A 8 s token with a 5 s margin keeps 8 - 2 (a quarter) = 6 s.
    c = synced(Issuer(ttl=8), margin=5, refresh=0)
    c.token(RES, OP)
    t.advance(5999)
    c.token(RES, OP)
    t.advance(1)
    assert c.cached(RES, OP) == 0


@ticking()
def test_refresh_ahead_fetches_before_expiry(t):
    c = synced(Issuer(ttl=60), margin=5, refresh=10, batch=4)
    c.token(RES, OP)
    t.advance(44000)  # 11 s before the 55 s deadline: not yet
    c.token(RES, OP)
    assert c.round_trips == 1
    t.advance(1500)  # 9.5 s before: refresh ahead, old tokens first
    assert c.token(RES, OP) == b"tok-4"
    assert c.round_trips == 2
    assert c.cached(RES, OP) == 1 + 4
    t.advance(10000)  # the first batch expired; the new one serves
    assert c.token(RES, OP) == b"tok-6"
    assert c.round_trips == 2


@ticking()
def test_refresh_ahead_failure_serves_cached_token(t):
    c = synced(Issuer(ttl=60))
    c.token(RES, OP)
    t.advance(46000)
    c.issuer.script = [HTTPError("connection refused")]
    assert c.token(RES, OP) == b"tok-3"  # no error: a valid token is cached
    assert c.retry_in() > 0
    assert c.token(RES, OP) == b"tok-4"  # backing off: not even tried
    assert c.posts == 2


@ticking()
def test_refresh_ahead_denied_serves_cached_and_stops_asking(t):
    c = synced(Issuer(ttl=60))
    c.token(RES, OP)
    t.advance(46000)
    c.issuer.script = [c.issuer.refusal(403, "scope_denied")]
    assert [c.token(RES, OP) for _ in range(3)] == [b"tok-3", b"tok-4", b"tok-5"]
    assert c.posts == 2  # one refused refresh, then none while the cached tokens last
    c.issuer.script = [c.issuer.refusal(403, "scope_denied")]
    e = raises(C.Denied, c.token, RES, OP)  # nothing cached any more: the refusal shows
    assert e.code == "scope_denied"


@ticking()
def test_cache_full_evicts_least_recently_used(t):
    c = synced(max_entries=2, batch=4)
    c.token("/a", OP)
    t.advance(10)
    c.token("/b", OP)
    t.advance(10)
    c.token("/a", OP)  # /a is now the most recently used
    t.advance(10)
    c.token("/c", OP)  # evicts /b
    assert len(c._cache) == 2
    assert (c.cached("/a", OP), c.cached("/b", OP), c.cached("/c", OP)) == (2, 0, 3)
    n = c.round_trips
    c.token("/b", OP)  # comes back with a fetch, evicting /a now
    assert c.round_trips == n + 1 and len(c._cache) == 2 and c.cached("/a", OP) == 0


@ticking()
def test_cache_full_evicts_spent_entries_first(t):
    c = synced(max_entries=2, batch=2)
    c.token("/b", OP)  # /b: one token left
    t.advance(10)
    c.token("/a", OP)
    c.token("/a", OP)  # /a: the most recently used, but spent
    t.advance(10)
    c.token("/c", OP)  # evicts /a, not the least recently used /b
    assert sorted(k[0] for k in c._cache) == ["/b", "/c"] and c.cached("/b", OP) == 1


@ticking()
def test_cache_bounded_per_scope(t):
    c = synced(batch=2)
    for _ in range(5):
        c.prefetch([(RES, OP)], 2)
    assert c.cached(RES, OP) == 4  # at most 2 * batch kept; the oldest dropped
    assert c.token(RES, OP) == b"tok-8"


@ticking()
def test_prefetch_several_scopes_in_one_round_trip(t):
    c = synced()
    c.prefetch([("/a", "read"), ("/b", "write")], 2)
    assert c.round_trips == 1
    req = c.issuer.requests[0]
    assert req["scope"] == [["/a", "read"], ["/a", "read"], ["/b", "write"], ["/b", "write"]] and req["count"] == 1
    assert c.cached("/a", "read") == 2 and c.cached("/b", "write") == 2
    assert c.token("/b", "write") == b"tok-4"
    assert c.round_trips == 1


@ticking()
def test_batch_lowers_itself_to_the_policy_limit(t):
    c = synced(Issuer(max_batch=2), batch=8)
    assert c.token(RES, OP) == b"tok-2"
    assert c.batch == 2 and c.round_trips == 3  # 8 and 4 refused as too_large, 2 issued
    c.token(RES, OP)
    c.token(RES, OP)
    assert c.round_trips == 4


# -- failures and errors --------------------------------------------------------


@ticking()
def test_denied_codes(t):
    for code in ("scope_denied", "revoked", "unknown_device", "bad_mac", "malformed"):
        c = synced()
        c.issuer.script = [c.issuer.refusal(403, code)]
        e = raises(C.Denied, c.token, RES, OP)
        assert e.code == code and code in str(e)
        assert c.retry_in() == 0  # a refusal is an answer: no backoff
        assert c.token(RES, OP)


@ticking()
def test_transient_codes_back_off(t):
    for code, status in (("rate_limited", 429), ("store_unavailable", 503), ("internal_error", 500)):
        c = synced()
        c.issuer.script = [c.issuer.refusal(status, code, retry_after=7)]
        e = raises(C.IssuerUnavailable, c.token, RES, OP)
        assert e.code == code
        assert 7000 >= c.retry_in() >= 6990  # Retry-After honoured


@ticking()
def test_garbage_and_http_errors(t):
    cases = [
        ((200, {}, b"<html>hello</html>"), "without a crumb response"),
        ((200, {}, cbor.dumps([1, 2])), "without a crumb response"),
        ((200, {}, cbor.dumps({TIME: T0, 1: "text, not bytes", 2: 60})), "not a token response"),
        ((200, {}, cbor.dumps({TIME: T0, 2: 60})), "not a token response"),
        ((200, {}, cbor.dumps({TIME: T0, TOKENS: [[b"t", 60, 1]]})), "not a token response"),  # 1 token, 4 asked
        ((200, {}, cbor.dumps({TIME: T0, TOKENS: [[b"t", 0, 1]] * 4})), "not a token response"),
        ((200, {}, cbor.dumps({TIME: T0, TOKENS: [[b"t", 60]] * 4})), "not a token response"),
        ((200, {}, cbor.dumps({TIME: T0, TOKENS: 7})), "not a token response"),
        ((200, {}, cbor.dumps({TIME: T0, CODE: 5})), "without a crumb response"),
        ((200, {}, cbor.dumps({TIME: T0, TOKENS: []})[:-1]), "without a crumb response"),  # truncated CBOR
        ((500, {}, b"Internal Server Error"), "HTTP 500"),
        ((502, {}, b""), "HTTP 502"),
        ((404, {}, b'{"error": "no such endpoint"}'), "HTTP 404"),
        ((401, {}, b"unauthorized"), "HTTP 401"),
        ((200, {}, cbor.dumps({TIME: T0, CODE: "scope_denied"})), "without a crumb response"),
    ]
    for resp, why in cases:
        c = synced()
        c.issuer.script = [resp]
        e = raises(C.IssuerUnavailable, c.token, RES, OP)
        assert why in str(e), (resp, str(e))
        assert e.code == "issuer_unavailable"
        assert c.retry_in() > 0 and c.cached(RES, OP) == 0


@ticking()
def test_http_retry_after_header(t):
    c = synced()
    c.issuer.script = [(503, {"retry-after": "30"}, b"busy")]
    raises(C.IssuerUnavailable, c.token, RES, OP)
    assert 30000 >= c.retry_in() >= 29990


@ticking()
def test_transport_errors(t):
    for err in (HTTPError("timed out"), HTTPError("connection refused"), OSError(113)):
        c = synced()
        c.issuer.script = [err]
        e = raises(C.IssuerUnavailable, c.token, RES, OP)
        assert "unreachable" in str(e)


@ticking()
def test_backoff_doubles_with_jitter_and_resets(t):
    c = synced(backoff=1, max_backoff=8)
    waits = []
    for step in (1000, 2000, 4000, 8000, 8000):
        c.issuer.script = [HTTPError("down")]
        raises(C.IssuerUnavailable, c.token, RES, OP)
        w = c.retry_in()
        assert step // 2 <= w <= step, (step, w)
        n = c.posts
        e = raises(C.IssuerUnavailable, c.token, RES, OP)  # inside the window: no exchange
        assert c.posts == n and "backing off" in str(e)
        t.advance(w)
        waits.append(w)
    assert c.token(RES, OP)  # the issuer is back
    assert c.retry_in() == 0
    c.issuer.script = [HTTPError("down")]
    c._cache.clear()
    raises(C.IssuerUnavailable, c.token, RES, OP)
    assert 500 <= c.retry_in() <= 1000  # back to the first step


@ticking()
def test_backoff_jitter_spreads_devices(t):
    # Devices failing together do not come back together.
    waits = set()
    for _ in range(20):
        c = synced(backoff=1)
        c.issuer.script = [HTTPError("down")]
        raises(C.IssuerUnavailable, c.token, RES, OP)
        waits.add(c.retry_in())
    assert len(waits) > 5 and min(waits) >= 500 and max(waits) <= 1000, waits


@ticking()
def test_cached_tokens_served_while_issuer_down(t):
    c = synced()
    c.token(RES, OP)
    c.issuer.script = [HTTPError("down")] * 10
    assert [c.token(RES, OP) for _ in range(3)] == [b"tok-3", b"tok-4", b"tok-5"]
    raises(C.IssuerUnavailable, c.token, RES, OP)
    assert c.posts == 2  # only the call with nothing cached asked


# -- wire format and attaching ---------------------------------------------------


@ticking()
def test_request_encoding(t):
    c = synced(audience="ota")
    c.token(RES, OP)
    body = c._request(((RES, OP),), 4)
    m = cbor.loads(bytes(body))
    assert sorted(m) == sorted([5, 9, 24, -65537])
    assert m[5] == "ota" and m[9] == RES + "|" + OP and m[24] == "dev-0001"
    assert cbor.dumps(m) == bytes(body)  # deterministic encoding
    req = decode_request(body)  # checks the MAC: every byte before it
    assert req["count"] == 4 and len(req["nonce"]) == 6 and len(m[-65537]) == 4 + 1 + 6 + 16
    one = decode_request(c._request(((RES, OP),), 1))
    assert one["count"] == 1
    # a name the text form cannot carry: the scope goes as AIF in a byte string
    odd = cbor.loads(bytes(c._request((("/a b", "x|y"),), 1)))
    assert odd[9] == cbor.dumps([["/a b", "x|y"]])


@ticking()
def test_header_envelope_publish(t):
    c = synced()
    h = c.header(RES, OP)
    assert h == "Bearer dG9rLTI"  # base64url("tok-2"), no padding
    env = c.envelope(RES, OP, "21.5")
    assert cbor.loads(env) == [b"tok-3", b"21.5"]

    class MQTT:
        def publish(self, topic, msg, retain=False, qos=0):
            self.sent = (topic, msg, retain, qos)

    m = MQTT()
    c.publish(m, b"/sensors/temp01", b"\x00\x01", retain=True)
    assert m.sent == (b"/sensors/temp01", cbor.dumps([b"tok-6", b"\x00\x01"]), True, 0)
    assert c.issuer.requests[-1]["scope"] == [["/sensors/temp01", "publish"]]


def test_b64url():
    for data, want in ((b"", ""), (b"f", "Zg"), (b"fo", "Zm8"), (b"foo", "Zm9v"), (b"foob", "Zm9vYg"),
                       (b"\xfb\xff\xbf", "-_-_"), (bytes(range(256)), None)):
        got = C.b64url(data)
        if want is not None:
            assert got == want, (data, got)
        assert "=" not in got and "+" not in got and "/" not in got
        assert len(got) == (len(data) * 4 + 2) // 3
    assert C.b64url(b"\xff", b"Bearer ") == "Bearer _w"


def test_from_file():
    path = "crumb-test-cred.json"
    with open(path, "w") as f:
        f.write('{"device_id": "dev-0001", "key": "%s", "issuer": "http://10.0.0.2:8080/"}' % (
            "".join("%02x" % b for b in KEY)))
    try:
        c = C.from_file(path, batch=2)
    finally:
        import os

        os.remove(path)
    assert c.device_id == "dev-0001" and c.key == KEY and c.url == "http://10.0.0.2:8080/token" and c.batch == 2
    assert c.cadata is None


def test_from_file_takes_the_ca_pin():
    # `crumb device add --ca` writes the issuer's CA as "ca": it is the cadata, unless one is given.
    path = "crumb-test-cred-ca.json"
    pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"
    with open(path, "w") as f:
        f.write('{"device_id": "dev-0001", "key": "%s", "issuer": "https://10.0.0.2:8443", "ca": "%s"}' % (
            "".join("%02x" % b for b in KEY), pem))
    try:
        pinned = C.from_file(path)
        given = C.from_file(path, cadata=False)
    finally:
        import os

        os.remove(path)
    assert pinned.cadata == "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert given.cadata is False


def test_bad_issuer_url_fails_at_construction():
    raises(ValueError, C.Client, "issuer.local:8080", "dev-0001", KEY)


def test_error_types():
    assert issubclass(C.IssuerUnavailable, C.CrumbError) and issubclass(C.Denied, C.CrumbError)
    assert issubclass(C.ClockUnsynced, C.CrumbError)
    e = C.Denied("revoked: gone", "revoked")
    assert e.code == "revoked" and str(e) == "revoked: gone"
    assert C.IssuerUnavailable("x").code == "issuer_unavailable"
