# ucrumb.client: fetch tokens scoped to one operation on one resource, keep
# them in a small cache, attach them to outbound calls. Runs unmodified on
# MicroPython >= 1.22 and CPython >= 3.10. docs/device.md is the guide;
# PROTOCOL.md and host/crumb/issuer/protocol.py define the wire format.
#
# Clock: no RTC needed. Every issuer response carries the issuer's time; the
# device time is that plus the ticks since. Before the first response the
# device sends time 0, the issuer refuses with stale_time and its time, and
# the client retries once, synced. An answer whose time is outside
# _TIME_MIN.._TIME_MAX is refused whole (bad_time) and its time not adopted:
# answers are not authenticated, and one absurd time would otherwise be sent
# back in every request (PROTOCOL.md §11.4).
#
# Cache: at most max_entries scopes, each a few tokens; a token expires by
# ticks (expires_in minus a safety margin, so no wall clock is involved), its
# uses are counted down, and it is never handed out expired or used up.
from ucrumb import cbor, http
from ucrumb.http import ticks_add, ticks_diff, ticks_ms
from ucrumb.mac import hmac_sha256

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from os import urandom
except ImportError:
    # A MicroPython port without os.urandom (the WebAssembly port): its
    # `random`, which MicroPython seeds at boot from the port's own source of
    # randomness (MICROPY_PY_RANDOM_SEED_INIT_FUNC), so nonces differ across
    # reboots. CPython always has os.urandom; anywhere else, refuse to run.
    import sys

    if sys.implementation.name != "micropython":
        raise ImportError("ucrumb needs os.urandom for its request nonces")
    from random import getrandbits

    def urandom(n):
        return bytes(getrandbits(8) for _ in range(n))

from binascii import unhexlify

# Wire constants: copies of host/crumb/wire.py's, as literals so that MicroPython
# inlines them (the device cannot import host code). tests/device/test_device_wire.py
# checks each const() here against shared/wire.json, and fails on one it cannot map.
_TOKEN = const(1)
_EXPIRES_IN = const(2)
_CNF = const(8)
_CNF_COSE_KEY = const(1)
_COSE_KEY_K = const(-1)
_POP_KEY_BYTES = const(16)
_ERR_DESC = const(31)
_TIME = const(-65537)
_TOKENS = const(-65538)
_USES = const(-65539)
_ERR_CODE = const(-65540)
_RETRY_AFTER = const(-65541)
_NONCE_BYTES = const(6)
_MAC_BYTES = const(16)
_TIME_BYTES = const(4)
# The issuer times the device adopts: 2026-01-01 (no crumb release predates it)
# to 2100-01-01 (00:00 UTC), which leaves the 4-byte request time (to 2106) room.
_TIME_MIN = const(1767225600)
_TIME_MAX = const(4102444800)
# The longest token life it takes (s): the issuer policy's bound, far inside
# the ticks' half period (2**29 ms, 6.2 days) that deadlines are kept in.
_MAX_LIFE = const(86400)

# A cache entry: [_USED: last used (ticks), _AHEAD: fetch ahead from (ticks)
# or None, then the tokens from _FIRST on, oldest first]; a token:
# [_BYTES, _LEFT: uses left, _UNTIL: deadline (ticks)], and for a
# proof-of-possession token a fourth, _KEY: its PoP key (PROTOCOL.md §11.9).
_USED = const(0)
_AHEAD = const(1)
_FIRST = const(2)
_BYTES = const(0)
_LEFT = const(1)
_UNTIL = const(2)
_KEY = const(3)

_HEADERS = {"Content-Type": "application/ace+cbor"}
_CONTENT_FORMAT = const(12)  # CoAP options (ucrumb.coap's, here so that HTTP-only firmware need not load it)
_MAX_AGE = const(14)
# Refusals that may pass by themselves: back off and raise IssuerUnavailable.
_TRANSIENT = ("rate_limited", "store_unavailable", "internal_error", "replayed")


class CrumbError(Exception):
    """Base of the client's errors: ``.code`` is a stable string, ``str(e)`` the message."""

    code = "error"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code:
            self.code = code


class IssuerUnavailable(CrumbError):
    """No valid token is cached and none could be had now: try again later.

    The network is down, the exchange timed out, the issuer answered an HTTP
    error or garbage or a refusal that passes by itself (rate_limited,
    store_unavailable, internal_error, replayed), or the client is backing
    off after such a failure. ``.code``: ``issuer_unavailable`` or the
    issuer's code.
    """

    code = "issuer_unavailable"


class Denied(CrumbError):
    """The issuer refused for good: retrying does not help until the policy,
    the enrolment or the credentials change. ``.code``: ``scope_denied``,
    ``revoked``, ``unknown_device``, ``bad_mac``, ``malformed``,
    ``too_large``, ...
    """

    code = "denied"


class ClockUnsynced(CrumbError):
    """The issuer found the device time stale even right after a resync (``stale_time``)."""

    code = "stale_time"


class Backoff:
    """Exponential backoff with jitter, the client's own and usable by an
    application for its other failures (a service, a broker, the network).

    Each ``failed()`` waits a random point in the upper half of the current
    step; the step doubles from ``first`` up to ``cap`` (milliseconds), so
    devices failing together do not come back together. ``ok()`` resets it.
    """

    def __init__(self, first=1000, cap=60000):
        self.first = first
        self.cap = cap
        self.step = 0  # current step (ms); 0: no failure since the last ok()
        self.until = None  # ticks before which to wait, or None

    def failed(self, at_least=None):
        """Record a failure; returns the wait (ms). ``at_least`` (ms, e.g. a
        Retry-After) lengthens the wait, up to ``cap``."""
        d = self.step * 2 if self.step else self.first
        d = min(self.cap, d)
        self.step = d
        wait = d - (d // 2) * int.from_bytes(urandom(2), "big") // 65536
        if type(at_least) is int and at_least > wait:
            wait = min(self.cap, at_least)
        self.until = ticks_add(ticks_ms(), wait)
        return wait

    def ok(self):
        """A success: the next failure starts from ``first`` again."""
        self.step = 0
        self.until = None

    def left(self):
        """Milliseconds still to wait (0: go ahead)."""
        if self.until is None:
            return 0
        d = ticks_diff(self.until, ticks_ms())
        return max(0, d)


_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data, prefix=b""):
    """``prefix`` + base64url of ``data`` without padding, as str (how tokens
    travel in text)."""
    # Written out because the ports' binascii differ.
    n = len(data)
    k = len(prefix)
    out = bytearray(k + (n * 4 + 2) // 3)
    out[:k] = prefix
    j = k
    for i in range(0, n, 3):
        v = data[i] << 16
        if i + 1 < n:
            v |= data[i + 1] << 8
        if i + 2 < n:
            v |= data[i + 2]
        for s in (18, 12, 6, 0):
            if j < len(out):
                out[j] = _B64[v >> s & 63]
                j += 1
    return str(out, "ascii")


def from_file(path="crumb.json", **kw):
    """A Client from the credential file ``crumb device add`` writes.

    Args:
        path: the JSON file ``{"device_id": ..., "key": hex, "issuer": URL}``,
            with ``"ca"`` (PEM) when the issuer is pinned to a CA: it is the
            ``cadata`` unless one is given here.
        **kw: Client's other arguments (batch, cadata, timeout, ...).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not that JSON, or an argument is malformed.
        KeyError: a field is missing.
    """
    import json

    with open(path) as f:
        c = json.load(f)
    if "ca" in c and "cadata" not in kw:
        kw["cadata"] = c["ca"]
    return Client(c["issuer"], c["device_id"], unhexlify(c["key"]), **kw)


class Client:
    """Gets tokens from the issuer, keeps them in a small cache, attaches them to calls.

    Args:
        issuer_url: ``http[s]://host[:port]``, or ``coap://host[:port]`` for CoAP over UDP
            (ucrumb.coap; set ``timeout`` to cover its retransmissions, docs/device.md).
        device_id: the device id (str).
        key: the device key (bytes; 32 from ``crumb device add``).
        batch: tokens fetched per round trip for one scope (lowered by
            itself if the issuer's policy allows fewer).
        audience: asked for in every request (a policy may require one).
        cadata: the issuer's CA certificate for https, DER bytes or PEM
            (str or bytes); False skips verification (docs/device.md, TLS).
        timeout: seconds for one exchange with the issuer (and for request()).
        max_entries: scopes cached; each holds up to 2 * batch tokens.
        margin: seconds before expiry a token stops being handed out.
        refresh: seconds before expiry a new batch is fetched ahead.
        backoff, max_backoff: seconds; the wait after failures doubles from
            ``backoff`` up to ``max_backoff``, with jitter.

    Raises:
        ValueError: a malformed URL or argument.

    Attributes:
        round_trips: exchanges with the issuer so far.
    """

    def __init__(self, issuer_url, device_id, key, batch=4, audience=None, cadata=None, timeout=5,
                 max_entries=4, margin=5, refresh=10, backoff=1, max_backoff=60):
        self.url = issuer_url.rstrip("/") + "/token"
        self.coap = self.url.startswith("coap://")  # CoAP (ucrumb.coap, imported only then) or HTTP
        if self.coap:
            from ucrumb import coap

            coap.split_url(self.url)  # a bad URL fails here, not on first use
        else:
            http.split_url(self.url)
        if type(device_id) is not str or not device_id or type(key) not in (bytes, bytearray) or not key \
                or not (audience is None or type(audience) is str) or type(batch) is not int or batch < 1:
            raise ValueError("device_id and audience must be str, key bytes, batch an int >= 1")
        self.device_id = device_id
        self.key = key
        self.batch = batch
        self.audience = audience
        self.cadata = cadata
        self.timeout = timeout
        self.max_entries = max_entries
        self.margin = int(margin * 1000)
        self.refresh = int(refresh * 1000)
        self._backoff = Backoff(int(backoff * 1000), int(max_backoff * 1000))
        self._cache = {}  # scope -> entry (see _USED above)
        self._t0 = 0  # issuer time (s) at ticks _at
        self._at = None  # None: never synced
        self.round_trips = 0  # HTTP exchanges with the issuer so far

    # -- clock ------------------------------------------------------------
    def now(self):
        """Device time, unix seconds: the issuer's last time plus the ticks since; 0 before the first answer."""
        if self._at is None:
            return 0
        d = ticks_diff(ticks_ms(), self._at)
        return self._t0 + d // 1000 if d >= 0 else 0

    # -- tokens -----------------------------------------------------------
    def token(self, resource, operation):
        """One use of a token for (resource, operation), as bytes.

        From the cache, or fetched with a batch of spares (one round trip).

        Raises:
            IssuerUnavailable, Denied, ClockUnsynced: no valid token is
                cached and none can be had (nothing else escapes).
        """
        return self._take(resource, operation)[_BYTES]

    def _take(self, resource, operation):
        # One use of a cached token (fetching as token() says): the cache's
        # [bytes, uses left, deadline(, PoP key)].
        scope = (resource, operation)
        now = ticks_ms()
        e = self._cache.get(scope)
        t = _live(e, now) if e else None
        if t is None or (e[_AHEAD] is not None and ticks_diff(now, e[_AHEAD]) >= 0):
            try:
                self._fetch((scope,), self.batch)
            except CrumbError as err:
                if t is None:
                    raise err
                if isinstance(err, Denied):
                    e[_AHEAD] = None  # serve what is cached; stop asking ahead
            e = self._cache[scope]
            now = ticks_ms()
            t = _live(e, now)
            if t is None:
                raise IssuerUnavailable("the issuer's tokens expired before they could be used")
        t[_LEFT] -= 1
        e[_USED] = now
        return t

    def prefetch(self, scopes, count=1):
        """Fetch ``count`` tokens for each (resource, operation) in ``scopes``, in one
        round trip (at boot, or before going offline for a while). Raises as token()."""
        scopes = [tuple(s) for s in scopes]
        if len(scopes) == 1:
            self._fetch(scopes, count)
        else:
            self._fetch([s for s in scopes for _ in range(count)], 1)

    def cached(self, resource, operation):
        """Uses left in the cache for (resource, operation)."""
        e = self._cache.get((resource, operation))
        if not e:
            return 0
        _live(e, ticks_ms())
        n = 0
        for t in e[_FIRST:]:
            if ticks_diff(t[_UNTIL], ticks_ms()) > 0:
                n += t[_LEFT]
        return n

    def retry_in(self):
        """Milliseconds until the client asks the issuer again after a failure (0: now)."""
        return self._backoff.left()

    # -- attaching --------------------------------------------------------
    def header(self, resource, operation):
        """The ``Authorization`` header value for one call: ``"Bearer <base64url token>"``. Raises as token()."""
        return b64url(self.token(resource, operation), b"Bearer ")

    def auth_headers(self, method, url, resource, operation, body=None):
        """The headers that authorize one call: ``Authorization``, and for a proof-of-possession
        token ``Crumb-PoP``, the proof for this method, URL path and body (PROTOCOL.md §12.1).
        Raises as token()."""
        t = self._take(resource, operation)
        h = {"Authorization": b64url(t[_BYTES], b"Bearer ")}
        if len(t) > _KEY:
            from ucrumb import pop

            h["Crumb-PoP"] = b64url(pop.proof(t[_KEY], t[_BYTES], self.now(), method, http.split_url(url)[3],
                                              body or b""))
        return h

    def envelope(self, resource, operation, payload, topic=None, method=b"PUBLISH"):
        """The MQTT message: CBOR ``[token, payload]`` (payload bytes or str), with a PoP
        token ``[token, payload, proof]`` for ``method`` and ``topic`` (default: the
        resource; over CoAP the request's method and target, PROTOCOL.md §12.1). Raises as token()."""
        if isinstance(payload, str):
            payload = payload.encode()
        t = self._take(resource, operation)
        if len(t) > _KEY:
            from ucrumb import pop

            return cbor.dumps((t[_BYTES], payload, pop.proof(t[_KEY], t[_BYTES], self.now(), method,
                                                             resource if topic is None else topic, payload)))
        return cbor.dumps((t[_BYTES], payload))

    def publish(self, mqtt, topic, payload, operation="publish", resource=None, retain=False, qos=0):
        """Publish ``payload`` in an envelope.

        Args:
            mqtt: an MQTT client with ``publish(topic, msg, retain=, qos=)``:
                umqtt.simple, or paho on CPython. Or a ``coap://host[:port]``
                URL: the envelope is POSTed (Content-Format 60,
                application/cbor) to that URL + "/" + topic, and the CoAP
                answer is returned as request() returns it.
            topic: str or bytes; also the token's resource unless ``resource`` is given.

        Raises:
            IssuerUnavailable, Denied, ClockUnsynced: for the token, as token().
            OSError: the MQTT client failed: what umqtt.simple raises for a
                broken connection, and anything else it raises wrapped in
                one, so that a reconnect on OSError covers every case.
        """
        if resource is None:
            resource = topic if isinstance(topic, str) else topic.decode()
        if isinstance(mqtt, str):
            from ucrumb import coap

            url = mqtt.rstrip("/") + "/" + resource.lstrip("/")
            msg = self.envelope(resource, operation, payload, coap.uri(coap.split_url(url)[2])[1], b"POST")
            return coap.request("POST", url, msg, {_CONTENT_FORMAT: coap.CBOR}, self.timeout)
        msg = self.envelope(resource, operation, payload, topic)
        try:
            mqtt.publish(topic, msg, retain=retain, qos=qos)
        except OSError as e:
            raise e
        except Exception as e:
            raise OSError("MQTT publish failed: %r" % (e,))

    def request(self, method, url, resource, operation, body=None, headers=None, max_body=http.MAX_BODY,
                cadata=None):
        """The call, with a token for (resource, operation) attached.

        Returns:
            (status, headers, body) as ucrumb.http.request returns it: header
            names in lower case; an HTTP error status is returned, not raised.
            For a ``coap://`` URL, as ucrumb.coap.request returns it: the
            token travels in CoAP option 65003 (PROTOCOL.md §13), a PoP token's
            proof in option 65007 (§12.1), ``headers``
            are more options ({number: value}), the status is class * 100 +
            detail (2.05 -> 205) and the options a list of (number, value).

        Raises:
            IssuerUnavailable, Denied, ClockUnsynced: for the token, as token().
            ucrumb.http.HTTPError, ucrumb.coap.CoapError: (OSErrors) the call itself failed.
        """
        if url.startswith("coap://"):
            from ucrumb import coap

            t = self._take(resource, operation)
            o = {coap.TOKEN_OPTION: t[_BYTES]}
            if len(t) > _KEY:  # a PoP token: its proof in option 65007, for the request as sent (PROTOCOL.md §12.1)
                from ucrumb import pop

                o[coap.POP_OPTION] = pop.proof(t[_KEY], t[_BYTES], self.now(), method,
                                               coap.uri(coap.split_url(url)[2])[1], body)
            if headers:
                o.update(headers)
            return coap.request(method, url, body, o, self.timeout, max_body)
        h = self.auth_headers(method, url, resource, operation, body)
        if headers:
            h.update(headers)
        return http.request(method, url, body, h, self.timeout, self.cadata if cadata is None else cadata,
                            max_body)

    # -- the issuer -------------------------------------------------------
    def _fetch(self, scopes, count):
        if self._backoff.left():
            raise IssuerUnavailable("backing off after a failure (%d ms left)" % self.retry_in())
        retried = False
        while True:
            sent = ticks_ms()
            resp = self._exchange(scopes, count)
            code = resp.get(_ERR_CODE)
            if code is None:
                break
            msg = "%s: %s" % (code, resp.get(_ERR_DESC))
            if code == "stale_time" and not retried:
                retried = True  # _exchange synced the clock from the refusal
                continue
            if code == "too_large" and count > 1 and len(scopes) == 1:
                count //= 2  # the policy allows smaller batches: ask for those from now on
                self.batch = min(self.batch, count)
                continue
            if code == "stale_time":
                raise ClockUnsynced(msg)
            if code in _TRANSIENT:
                self._failed(resp.get(_RETRY_AFTER))
                raise IssuerUnavailable(msg, code)
            raise Denied(msg, code)
        try:
            items = tokens(resp, len(scopes) * count)
        except IssuerUnavailable as e:
            self._failed(None)
            raise e
        self._backoff.ok()
        keep = max(len(items), 2 * self.batch)
        for i in range(len(items)):
            self._store(scopes[i // count], items[i], sent, keep)

    def _exchange(self, scopes, count):
        # One POST /token; returns the decoded response map (a token response
        # or a crumb refusal). Everything else is IssuerUnavailable.
        self.round_trips += 1
        req = self._request(scopes, count)
        try:
            status, hdrs, data = self._post(req, 256 + 512 * len(scopes) * count)
        except OSError as e:
            self._failed(None)
            raise IssuerUnavailable("issuer unreachable: %s" % e)
        try:
            if status == 200 and data[:1] == b"\x83":
                # An encrypted answer (a PoP rule, PROTOCOL.md §11.9), bound to this request's MAC.
                from ucrumb import pop

                try:
                    data = pop.open_response(self.key, req[-_MAC_BYTES:], data)
                except Exception:  # ValueError (tag, shape), and nothing else may escape token()
                    raise IssuerUnavailable("the issuer's encrypted answer does not decrypt for this request")
            resp = answer(status, data)
        except IssuerUnavailable as e:
            ra = hdrs.get("retry-after", "")
            self._failed(int(ra) if 0 < len(ra) < 10 and not ra.strip("0123456789") else None)
            raise e
        t = resp.get(_TIME)
        if t is not None:  # answer() let only a time in range through
            self._t0 = t
            self._at = ticks_ms()
        return resp

    def _post(self, body, max_body):
        # The transport: (status, headers, body) or OSError. Over CoAP the
        # token response is 2.01 Created (RFC 9200 §5.8.2), taken as 200; a
        # refusal's code is passed on (4.00 -> 400, 4.01 -> 401, 5.03 -> 503),
        # and Max-Age stands for Retry-After (RFC 7252 §5.9.3.4).
        if self.coap:
            from ucrumb import coap

            st, opts, data = coap.request("POST", self.url, body, {_CONTENT_FORMAT: coap.ACE_CBOR}, self.timeout,
                                          max_body)
            ma = coap.option(opts, _MAX_AGE)
            return (200 if st == 201 else st), {"retry-after": str(int.from_bytes(ma, "big"))} if ma else {}, data
        return http.request("POST", self.url, body, _HEADERS, self.timeout, self.cadata, max_body,
                            (b"retry-after",))

    def _request(self, scopes, count):
        # The signed request (PROTOCOL.md §11), in deterministic key order:
        # 5 audience, 9 scope, 24 client_id, then the crumb block under the
        # private-use key -65537, which sorts last: time || count || nonce ||
        # MAC. The MAC ends the request and covers every byte before it.
        out = bytearray(1)
        if self.audience is not None:
            out.append(0x05)
            cbor._enc(self.audience, out)
        out.append(0x09)
        cbor._enc(_scope(scopes), out)
        out.extend(b"\x18\x18")
        cbor._enc(self.device_id, out)
        out[0] = 0xA3 if self.audience is None else 0xA4
        out.extend(b"\x3a\x00\x01\x00\x00\x58")  # -65537, then a byte string of:
        out.append(_TIME_BYTES + 1 + _NONCE_BYTES + _MAC_BYTES)
        out.extend(self.now().to_bytes(_TIME_BYTES, "big"))
        out.append(count)
        out.extend(urandom(_NONCE_BYTES))
        out.extend(hmac_sha256(self.key, out)[:_MAC_BYTES])
        return out

    def _failed(self, retry_after):
        # Back off (Backoff above); an issuer's Retry-After (s) is honoured up to max_backoff.
        self._backoff.failed(retry_after * 1000 if type(retry_after) is int else None)

    def _store(self, scope, item, sent, keep):
        e = self._cache.get(scope)
        if e is None:
            if len(self._cache) >= self.max_entries:
                self._evict()
            e = self._cache[scope] = [sent, None]
        life = item[1] * 1000
        life -= min(self.margin, life // 4)
        t = [item[0], item[2], ticks_add(sent, life)]
        if len(item) > 3:
            t.append(item[3])
        e.append(t)
        if len(e) > _FIRST + keep:
            e.pop(_FIRST)  # the oldest token: it expires first
        e[_AHEAD] = ticks_add(sent, life - min(self.refresh, life // 2))

    def _evict(self):
        # An entry with nothing usable left, else the least recently used.
        now = ticks_ms()
        victim = None
        for k in self._cache:
            e = self._cache[k]
            if _live(e, now) is None:
                victim = k
                break
            if victim is None or ticks_diff(e[_USED], self._cache[victim][_USED]) < 0:
                victim = k
        del self._cache[victim]


def answer(status, data):
    """The issuer's answer to ``POST /token`` (HTTP status, body bytes) as a
    map: a token response (200) or a crumb refusal (an error status, its
    code a str). Pure: also a fuzzing entry point.

    Raises:
        IssuerUnavailable: anything else; ``.code`` ``bad_time`` when the
            answer carries a time (key -65537) that is not an int between
            _TIME_MIN and _TIME_MAX (that answer is refused whole).
    """
    try:
        resp = cbor.loads(data, 4)
    except Exception:  # ValueError for anything malformed; nothing else may escape token()
        resp = None
    if type(resp) is dict:
        if _TIME in resp:
            t = resp[_TIME]
            if type(t) is not int or t < _TIME_MIN or t > _TIME_MAX:
                raise IssuerUnavailable("the issuer's time is out of range: not adopted", "bad_time")
        code = resp.get(_ERR_CODE)
        if (status == 200 and code is None) or (status >= 400 and type(code) is str):
            return resp
    raise IssuerUnavailable("the issuer answered HTTP %d without a crumb response" % status)


def tokens(resp, n):
    """The ``n`` tokens of a token response map (from answer()), each
    ``(token bytes, expires_in 1.._MAX_LIFE s, uses >= 1[, PoP key])``. Pure:
    also a fuzzing entry point.

    Raises:
        IssuerUnavailable: the map is not a token response for ``n`` tokens.
    """
    try:
        if _TOKENS in resp:
            items = resp[_TOKENS]
        else:
            one = [resp[_TOKEN], resp[_EXPIRES_IN], resp.get(_USES, 1)]
            if _CNF in resp:  # a PoP token's key: {1: {1: 4, -1: key}}
                one.append(resp[_CNF][_CNF_COSE_KEY][_COSE_KEY_K])
            items = (one,)
        if len(items) != n:
            raise ValueError
        for it in items:
            tok, life, uses = it[0], it[1], it[2]
            if type(tok) is not bytes or type(life) is not int or type(uses) is not int or life < 1 \
                    or life > _MAX_LIFE or uses < 1 or not 3 <= len(it) <= 4 \
                    or (len(it) == 4 and (type(it[3]) is not bytes or len(it[3]) != _POP_KEY_BYTES)):
                raise ValueError
    except (KeyError, IndexError, TypeError, ValueError):
        raise IssuerUnavailable("the issuer's answer is not a token response")
    return items


def _scope(scopes):
    # The request's scope: "resource|operation" entries separated by spaces
    # (the text form RFC 9200 allows), or, when a name holds a space, '|' or
    # ',', the same as AIF in a byte string.
    for r, o in scopes:
        for c in " |,":
            if c in r or c in o:
                return cbor.dumps([[r, o] for r, o in scopes])
    return " ".join(r + "|" + o for r, o in scopes)


def _live(e, now):
    # Drop the entry's spent and expired tokens from the front; return the
    # first usable one or None.
    while len(e) > _FIRST:
        t = e[_FIRST]
        if t[_LEFT] > 0 and ticks_diff(t[_UNTIL], now) > 0:
            return t
        e.pop(_FIRST)
    return None
