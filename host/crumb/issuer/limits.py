"""In-process admission state: device nonces seen, and per-device token buckets.

Both are bounded. The nonce cache refuses (store_unavailable) when full of
live nonces rather than forget one, since forgetting would let a replay
through; the buckets drop only buckets that have refilled completely, which
is the same as never having seen the device.
"""

from __future__ import annotations

import heapq

from .codes import Refusal


class NonceCache:
    """Remembers (device, nonce) until the request's time can no longer pass the freshness check."""

    BUCKET_SECONDS = 4

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._expiry: dict[bytes, float] = {}
        self._buckets: dict[int, list[bytes]] = {}
        self._heap: list[int] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        limit = int(now) // self.BUCKET_SECONDS
        heap, buckets, expiry = self._heap, self._buckets, self._expiry
        while heap and heap[0] < limit:
            for key in buckets.pop(heapq.heappop(heap)):
                expiry.pop(key, None)

    def add(self, key: bytes, expires: float, now: float) -> bool:
        """Record ``key`` until ``expires``; False if it is already recorded (a replay)."""
        seen = self._expiry.get(key)
        if seen is not None and seen >= now:
            return False
        if len(self._expiry) >= self.max_entries:
            self._purge(now)
            if len(self._expiry) >= self.max_entries:
                raise Refusal("store_unavailable", f"the nonce cache is full ({self.max_entries} live nonces)",
                              retry_after=self.BUCKET_SECONDS)
        self._expiry[key] = expires
        bucket = int(expires) // self.BUCKET_SECONDS + 1
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = []
            heapq.heappush(self._heap, bucket)
            self._purge(now)
        entries.append(key)
        return True


class TokenBuckets:
    """Per-device token buckets: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, max_devices: int = 1_000_000) -> None:
        self.max_devices = max_devices
        self._state: dict[str, list] = {}  # device -> [tokens, last, rate, burst]

    def take(self, device: str, cost: int, rate: float, burst: int, now: float) -> float:
        """Take ``cost`` tokens; 0.0 if granted, else the seconds until they would be."""
        state = self._state.get(device)
        if state is None:
            if len(self._state) >= self.max_devices:
                self._forget_full(now)
            state = self._state[device] = [float(burst), now, rate, burst]
        # A clock stepped back refills nothing (and must not drain the bucket).
        tokens = min(float(burst), state[0] + max(0.0, now - state[1]) * rate)
        state[1], state[2], state[3] = now, rate, burst
        if tokens < cost:
            state[0] = tokens
            return (cost - tokens) / rate
        state[0] = tokens - cost
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket idle long enough to refill is indistinguishable from a new one.
        stale = [d for d, (tokens, last, rate, burst) in self._state.items()
                 if tokens + (now - last) * rate >= burst]
        for d in stale:
            del self._state[d]
        if len(self._state) >= self.max_devices:
            raise Refusal("store_unavailable", f"rate-limit table is full ({self.max_devices} devices)", retry_after=1)
