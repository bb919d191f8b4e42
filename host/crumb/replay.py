"""Replay stores: where a verifier spends a token's uses, per (token id, hop).

``consume`` is the contract: atomically take one use if any is left. ``leeway``
says how long the store remembers: a verifier with clock leeway L accepts a
token until ``exp + L`` (and from ``iat - L``), so a store must keep each spent
use at least that long, and refuse, after a restart, every token some verifier
could have accepted before it (``iat <= restart + L``). A store therefore
serves verifiers whose leeway is at most its own, and ``Verifier`` refuses one
configured to forget sooner (PROTOCOL.md §7, docs/services.md §1).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .errors import Replayed, StoreUnavailable

#: Seconds of clock difference a verifier allows on exp, nbf and iat by default, and so
#: how long past exp a store remembers a spent use. Verifiers are servers with synced
#: clocks and devices take their time from the issuer: 5 s covers a lapse in clock sync.
DEFAULT_LEEWAY = 5


class ReplayStore(Protocol):
    """Where a verifier spends uses: any object with this ``leeway`` and ``consume``."""

    #: Seconds past a token's exp that a spent use is remembered, and after a restart
    #: (or lost data) past the restart that tokens are refused: the largest leeway of
    #: any verifier sharing the store. ``Verifier`` refuses a store with less than its own.
    leeway: int

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        """Take one of ``uses`` for (cti, hop); False when none is left.

        Raises Replayed when the store cannot know (restart fence) and
        StoreUnavailable when it cannot answer: never a silent True.
        """
        ...


class MemoryReplayStore:
    """Bounded, expiring, in-process store.

    Entries live until the token expires plus ``leeway`` (at least) and are
    dropped in expiry buckets, so each call is O(1) amortised. When full of
    live entries it refuses (store_unavailable) rather than forget a use.

    Restart fence: with ``fence=True`` (the default) the store refuses every
    token a verifier could have accepted before it was created, since the uses
    they had in a previous process are unknown here: those with
    ``iat <= creation second + leeway``. The ``+ leeway`` covers an issuer clock
    up to a leeway ahead (a verifier accepts ``iat`` up to ``now + leeway``),
    and the whole second of creation a restart within the second of a use. A
    new process thus refuses tokens for ``leeway`` + 1 s.

    Args:
        max_entries: live (token, hop) entries kept at most.
        fence: refuse tokens issued before the store was created (see above).
        leeway: the largest clock leeway of any verifier using the store:
            seconds an entry outlives its token's expiry, and the fence's reach.
        clock: the time source (unix seconds), the verifiers'.

    Raises:
        ValueError: a negative leeway.

    ``consume`` raises ``Replayed`` at the fence and ``StoreUnavailable`` when full.
    """

    BUCKET_SECONDS = 8
    #: consume() never waits on I/O: async servers may call it on the event loop.
    blocking = False

    def __init__(self, max_entries: int = 100_000, *, fence: bool = True, leeway: int = DEFAULT_LEEWAY,
                 clock: Callable[[], float] = time.time) -> None:
        if leeway < 0:
            raise ValueError("a replay store's leeway is 0 or more seconds")
        self.max_entries = max_entries
        self.leeway = leeway
        self.clock = clock
        self.fence = int(clock()) if fence else None
        self._left: dict[tuple[bytes, str], int] = {}
        self._buckets: dict[int, list[tuple[bytes, str]]] = {}
        self._bucket_heap: list[int] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._left)

    def fence_clear_at(self) -> int | None:
        """The first ``iat`` the restart fence lets through (None: no fence)."""
        return None if self.fence is None else self.fence + self.leeway + 1

    def _purge(self, now: int) -> None:
        heap, buckets, left = self._bucket_heap, self._buckets, self._left
        limit = now // self.BUCKET_SECONDS
        while heap and heap[0] < limit:
            for key in buckets.pop(heapq.heappop(heap)):
                left.pop(key, None)

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        if self.fence is not None and iat <= self.fence + self.leeway:
            raise Replayed("token was issued before this verifier started (or within its leeway of the start); "
                           "its earlier uses are unknown")
        key = (cti, hop)
        with self._lock:
            left = self._left.get(key)
            if left is not None:
                if left <= 0:
                    return False
                self._left[key] = left - 1
                return True
            # Expired buckets are dropped every 256 entries or when full: O(1)
            # amortised without reading the clock on every insert.
            size = len(self._left)
            if size >= self.max_entries or not size & 0xFF:
                self._purge(int(self.clock()))
                if len(self._left) >= self.max_entries:
                    raise StoreUnavailable(f"replay store is full ({self.max_entries} live tokens)")
            self._left[key] = uses - 1
            # Swept once the clock is past the bucket after this one: never before exp + leeway + 1.
            bucket = (exp + self.leeway) // self.BUCKET_SECONDS + 1
            keys = self._buckets.get(bucket)
            if keys is None:
                keys = self._buckets[bucket] = []
                heapq.heappush(self._bucket_heap, bucket)
            keys.append(key)
            return True
