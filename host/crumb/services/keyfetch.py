"""Issuer keys fetched from the issuer's ``GET /keys``, cached, refetched on an unknown kid.

    keys = FetchedKeys("http://issuer:8080/keys")
    verifier = Verifier([], resolver=keys)     # or pinned keys plus resolver=keys

A kid the cache does not know triggers a refetch, so a verifier trusts a newly
rotated key without a restart; refetches are rate-limited (``min_interval``)
so tokens with made-up kids cannot turn the verifier against the issuer. The
set is also refreshed when older than ``max_age``, which is how a retired key
stops being trusted. If the issuer cannot be reached, or answers with a
document that is not a usable key set, the last good set stays in force
(verification is offline by design): the failure is logged and counted, and
retries back off (``min_interval`` doubling per failure in a row, at most
``max_age``). Before any fetch succeeded, every kid is ``unknown_key``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx

from ..errors import CrumbError, KeysUnavailable
from ..keys import PublicKey
from .keyset import MAX_DOCUMENT_BYTES, KeySet, KeySetError, parse_json

log = logging.getLogger("crumb.keys")

# httpx's own failures: transport and protocol errors (HTTPError), a URL it cannot
# use (InvalidURL), a response stream it cannot read (StreamError).
_HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


class KeyFetchError(KeysUnavailable):
    """GET /keys failed: unreachable, timing out, not 200 (code ``keys_unavailable``)."""


class FetchedKeys:
    """A KeyResolver (see verify.py) backed by the issuer's ``GET /keys``.

    Args:
        url: the issuer's ``GET /keys`` URL.
        min_interval: seconds between fetch attempts at least (a kid the set does
            not know asks for one); doubled per failure in a row, up to ``max_age``.
        max_age: seconds after which the set in force is refreshed.
        timeout: seconds for one fetch.
        client: an ``httpx.Client`` to fetch with (default: one of its own).
        clock: the time source for the intervals (monotonic seconds).

    Lookups never raise: a failed fetch (``keys_unavailable``, ``invalid_key``) is
    logged (``crumb.keys``) and counted (``failures``, ``last_error``), and the last good set stays in force.
    """

    #: a lookup may wait on the network: async servers run verification off the event loop.
    blocking = True

    def __init__(self, url: str, *, min_interval: float = 10.0, max_age: float = 300.0,
                 timeout: float = 2.0, client: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.min_interval = min_interval
        self.max_age = max_age
        self.clock = clock
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._own_client = client is None
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._fetching = threading.Lock()  # one fetch at a time
        self.fetches = 0       # successful fetches
        self.failures = 0      # failed fetches
        self.failures_in_row = 0
        self.last_error: str | None = None

    @property
    def keys(self) -> KeySet | None:
        """The key set in force (None before the first successful fetch)."""
        return self._keys

    def fetch(self) -> KeySet:
        """Fetch and install the key set now; on failure the old set stays in force.

        Returns:
            KeySet: the new set, now in force.

        Raises:
            KeyFetchError: ``keys_unavailable``: unreachable, timing out, not 200.
            KeySetError: ``invalid_key``: larger than MAX_DOCUMENT_BYTES, nested too
                deep, not JSON, or not a trustworthy key set. Nothing else.
        """
        try:
            with self._client.stream("GET", self.url, headers={"accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise KeyFetchError(f"GET {self.url} answered {resp.status_code}")
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise KeySetError(f"GET {self.url}: key set larger than {MAX_DOCUMENT_BYTES} bytes")
        except _HTTPX_ERRORS as e:
            raise KeyFetchError(f"GET {self.url} failed: {type(e).__name__}: {e}") from None
        try:
            keys = parse_json(bytes(body))
        except KeySetError as e:
            raise KeySetError(f"GET {self.url}: {e.message}") from None
        self._install(keys)
        return keys

    def _install(self, keys: KeySet) -> None:
        # One attribute assignment: lookups see the old set or the new one, never a mix.
        old = self._keys
        self._keys = keys
        self._fetched_at = self.clock()
        self.fetches += 1
        if old is None or old.issuer.keys() != keys.issuer.keys() or old.nodes.keys() != keys.nodes.keys():
            log.info("issuer keys from %s: issuer %s; nodes %s", self.url,
                     [k.hex() for k in keys.issuer], [k.hex() for k in keys.nodes])

    def retry_interval(self) -> float:
        """Seconds between fetch attempts now: ``min_interval``, doubled per failure in a row, at most ``max_age``."""
        if not self.failures_in_row:
            return self.min_interval
        return min(max(self.min_interval, self.max_age), self.min_interval * 2 ** min(self.failures_in_row, 16))

    def _refresh(self, wait: bool) -> None:
        # Unknown kid: wait for a fetch in progress (it may bring the key).
        # Merely stale: never hold a request up behind another thread's fetch.
        if not self._fetching.acquire(blocking=wait):
            return
        try:
            now = self.clock()
            if now - self._attempted_at < self.retry_interval():
                return
            self._attempted_at = now
            try:
                self.fetch()
            except CrumbError as e:
                self._failed(str(e))
            except Exception as e:  # a bug in fetching must not displace the keys in force
                log.exception("bug while refreshing issuer keys from %s", self.url)
                self._failed(f"unexpected {type(e).__name__}: {e}")
            else:
                self.failures_in_row = 0
        finally:
            self._fetching.release()

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.failures_in_row += 1
        self.last_error = error
        log.warning("cannot refresh issuer keys (the last good set stays in force; next try in %.0f s): %s",
                    self.retry_interval(), error)

    def _lookup(self, kid: bytes, nodes: bool) -> PublicKey | None:
        keys = self._keys
        key = None if keys is None else (keys.node_key(kid) if nodes else keys.issuer_key(kid))
        if key is None or self.clock() - self._fetched_at >= self.max_age:
            self._refresh(wait=key is None)
            keys = self._keys
            if keys is not None:
                key = keys.node_key(kid) if nodes else keys.issuer_key(kid)
        return key

    def issuer_key(self, kid: bytes) -> PublicKey | None:
        return self._lookup(kid, nodes=False)

    def node_key(self, kid: bytes) -> PublicKey | None:
        return self._lookup(kid, nodes=True)

    def close(self) -> None:
        if self._own_client:
            self._client.close()
