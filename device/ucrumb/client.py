# The crumb device client: fetch tokens scoped to one operation on one
# resource, cache them, and attach them to outbound calls.
#
# Runs unmodified on MicroPython (no RTC needed: the issuer's time, carried
# by every response, plus time.ticks_ms() is the device clock) and CPython.
# Protocol: PROTOCOL.md, "Token endpoint".
import time

from ucrumb import cbor
from ucrumb import http
from ucrumb.mac import hmac_sha256

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython
    def ticks_ms():
        return time.monotonic_ns() // 1000000

    def ticks_add(t, delta):
        return t + delta

    def ticks_diff(a, b):
        return a - b

try:
    from os import urandom
except ImportError:
    import random

    def urandom(n):
        return bytes(random.getrandbits(8) for _ in range(n))

try:
    from binascii import b2a_base64
except ImportError:
    from ubinascii import b2a_base64

# Wire keys (the issuer's protocol module has the same numbers).
_AUD = const(5)
_SCOPE = const(9)
_CLIENT_ID = const(24)
_NONCE = const(-1)
_TIME = const(-2)
_COUNT = const(-3)
_MAC = const(-4)
_TOKEN = const(1)
_EXPIRES_IN = const(2)
_TOKENS = const(-5)
_USES = const(-6)
_ERR_DESC = const(31)
_ERR_CODE = const(-7)
_RETRY_AFTER = const(-8)

CONTENT_TYPE = "application/ace+cbor"
_MAC_BYTES = const(16)
_NONCE_BYTES = const(6)


class CrumbError(Exception):
    # Base of the client's errors; .code is a stable string.
    code = "error"

    def __init__(self, message, code=None):
        Exception.__init__(self, message)
        if code:
            self.code = code


class IssuerUnavailable(CrumbError):
    # No token could be had now (network, timeout, 5xx, garbage, rate limit)
    # and nothing valid is cached. Retry later; the client backs off by itself.
    code = "issuer_unavailable"


class Denied(CrumbError):
    # The issuer refused (scope_denied, revoked, unknown_device, bad_mac...).
    # Retrying will not help until the policy or credentials change.
    pass


class ClockUnsynced(CrumbError):
    # The issuer still found the device time stale after a resync.
    code = "stale_time"


def b64url(data):
    return b2a_base64(data).rstrip(b"\n=").replace(b"+", b"-").replace(b"/", b"_").decode()


class _Entry:
    # Tokens for one (resource, operation): each [token, uses_left, deadline_ticks].
    __slots__ = ("tokens", "used")

    def __init__(self):
        self.tokens = []
        self.used = 0


class Client:
    def __init__(self, issuer_url, device_id, key, batch=4, max_entries=8, margin_ms=5000,
                 refresh_ms=15000, timeout=5, backoff_ms=500, max_backoff_ms=60000,
                 audience=None, cadata=None):
        # key: the device key (32 bytes) from `crumb device add`.
        # batch: single-use tokens fetched per round trip for one scope.
        # margin_ms: a token is dropped this long before it expires (the call
        #   it rides on must still arrive in time).
        # refresh_ms: fetch ahead when the last cached token gets this close.
        self.url = issuer_url.rstrip("/") + "/token"
        self.device_id = device_id
        self.key = key
        self.batch = batch
        self.max_entries = max_entries
        self.margin_ms = margin_ms
        self.refresh_ms = refresh_ms
        self.timeout = timeout
        self.backoff_ms = backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.audience = audience
        self.cadata = cadata
        self._cache = {}
        self._offset = None  # issuer unix time minus ticks_ms()/1000, once synced
        self._delay = 0
        self._retry_at = None
        self.round_trips = 0

    # -- clock ---------------------------------------------------------------
    def now(self):
        # Device time in unix seconds: issuer time plus ticks since; 0 unsynced.
        if self._offset is None:
            return 0
        return self._offset + ticks_ms() // 1000

    @property
    def synced(self):
        return self._offset is not None

    def _sync(self, issuer_time):
        if isinstance(issuer_time, int) and issuer_time > 0:
            self._offset = issuer_time - ticks_ms() // 1000

    # -- cache ---------------------------------------------------------------
    def _live(self, entry, now):
        # Drop expired and used-up tokens; return the first usable one.
        toks = entry.tokens
        while toks and (toks[0][1] <= 0 or ticks_diff(toks[0][2], now) <= 0):
            toks.pop(0)
        return toks[0] if toks else None

    def _store(self, scope, issued, now):
        entry = self._cache.get(scope)
        if entry is None:
            if len(self._cache) >= self.max_entries:
                self._evict(now)
            entry = self._cache[scope] = _Entry()
        for tok, expires_in, uses in issued:
            life = expires_in * 1000 - self.margin_ms
            if life > 0 and uses > 0:
                entry.tokens.append([tok, uses, ticks_add(now, life)])

    def _evict(self, now):
        # Empty entries first, then the least recently used.
        victim = None
        for k in self._cache:
            e = self._cache[k]
            if self._live(e, now) is None:
                victim = k
                break
            if victim is None or e.used < self._cache[victim].used:
                victim = k
        del self._cache[victim]

    def cached(self, resource, operation):
        # How many uses are cached for this scope (for tests and diagnostics).
        entry = self._cache.get((resource, operation))
        if entry is None:
            return 0
        self._live(entry, ticks_ms())
        return sum(t[1] for t in entry.tokens)

    # -- tokens --------------------------------------------------------------
    def token(self, resource, operation):
        # A token for one use: from the cache, or fetched (with a batch of
        # spares). Each call hands out one use; never an expired or spent one.
        scope = (resource, operation)
        now = ticks_ms()
        entry = self._cache.get(scope)
        t = self._live(entry, now) if entry else None
        if t is None or (len(entry.tokens) == 1 and ticks_diff(t[2], now) < self.refresh_ms):
            try:
                self._fetch([scope], self.batch)
            except IssuerUnavailable:
                if t is None:
                    raise
            entry = self._cache[scope]
            now = ticks_ms()
            t = self._live(entry, now)
            if t is None:
                raise IssuerUnavailable("issuer returned no usable token")
        t[1] -= 1
        entry.used = now
        return t[0]

    def prefetch(self, scopes, count=1):
        # Fetch tokens for several (resource, operation) scopes in one round trip.
        self._fetch([tuple(s) for s in scopes], count)

    def header(self, resource, operation):
        return "Bearer " + b64url(self.token(resource, operation))

    def envelope(self, resource, operation, payload):
        # The MQTT message body: CBOR [token, payload] (publish it as is).
        return cbor.dumps([self.token(resource, operation), payload])

    def request(self, method, url, resource, operation, body=None, headers=None):
        h = {"Authorization": self.header(resource, operation)}
        if headers:
            for k in headers:
                h[k] = headers[k]
        return http.request(method, url, body, h, self.timeout, self.cadata)

    # -- the issuer ----------------------------------------------------------
    def _fetch(self, scopes, count):
        now = ticks_ms()
        if self._retry_at is not None and ticks_diff(self._retry_at, now) > 0:
            raise IssuerUnavailable("backing off after failures")
        resp = self._exchange(scopes, count)
        if resp.get(_ERR_CODE) == "stale_time":
            resp = self._exchange(scopes, count)  # we synced from the refusal
            if resp.get(_ERR_CODE) == "stale_time":
                raise ClockUnsynced("issuer rejects the device time even after a resync")
        code = resp.get(_ERR_CODE)
        if code is not None:
            msg = "%s: %s" % (code, resp.get(_ERR_DESC))
            if code in ("rate_limited", "store_unavailable"):
                self._failed(resp.get(_RETRY_AFTER))
                raise IssuerUnavailable(msg, code)
            raise Denied(msg, code)
        self._delay = 0
        self._retry_at = None
        now = ticks_ms()
        try:
            if _TOKENS in resp:
                issued = resp[_TOKENS]
                per = len(issued) // len(scopes)
                for i in range(len(scopes)):
                    self._store(scopes[i], issued[i * per:(i + 1) * per], now)
            else:
                self._store(scopes[0], [(resp[_TOKEN], resp[_EXPIRES_IN], resp.get(_USES, 1))], now)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            self._failed(None)
            raise IssuerUnavailable("issuer response is not a token response")

    def _exchange(self, scopes, count):
        body = self._request_body(scopes, count)
        try:
            status, hdrs, data = http.request("POST", self.url, body, {"Content-Type": CONTENT_TYPE},
                                              self.timeout, self.cadata)
        except (OSError, ValueError) as e:
            self._failed(None)
            raise IssuerUnavailable("issuer unreachable: %s" % e)
        finally:
            self.round_trips += 1
        try:
            resp = cbor.loads(data, max_len=1024)
            if not isinstance(resp, dict):
                raise ValueError
        except ValueError:
            self._failed(None)
            raise IssuerUnavailable("issuer sent %d with a body that is not a CBOR map" % status)
        self._sync(resp.get(_TIME))
        if status >= 500 or (status != 200 and _ERR_CODE not in resp):
            self._failed(resp.get(_RETRY_AFTER))
            raise IssuerUnavailable("issuer answered HTTP %d" % status)
        return resp

    def _request_body(self, scopes, count):
        m = {_CLIENT_ID: self.device_id, _NONCE: urandom(_NONCE_BYTES), _TIME: self.now(),
             _SCOPE: list(scopes[0]) if len(scopes) == 1 else [list(s) for s in scopes]}
        if count > 1:
            m[_COUNT] = count
        if self.audience is not None:
            m[_AUD] = self.audience
        m[_MAC] = hmac_sha256(self.key, cbor.dumps(m))[:_MAC_BYTES]
        return cbor.dumps(m)

    def _failed(self, retry_after):
        # Exponential backoff with jitter (half to full delay); honour Retry-After.
        d = self._delay * 2 if self._delay else self.backoff_ms
        self._delay = d if d < self.max_backoff_ms else self.max_backoff_ms
        wait = self._delay // 2 + (int.from_bytes(urandom(2), "big") * self._delay // 2) // 65536
        if isinstance(retry_after, int) and retry_after * 1000 > wait:
            wait = retry_after * 1000
        self._retry_at = ticks_add(ticks_ms(), wait)
