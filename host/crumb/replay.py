"""Replay stores: where a verifier spends a token's uses, per (token id, hop).

``consume`` is the whole contract: atomically take one use if any is left.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .errors import Replayed, StoreUnavailable


class ReplayStore(Protocol):
    """Where a verifier spends uses: any object with this ``consume``."""

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        """Take one of ``uses`` for (cti, hop); False when none is left.

        Raises Replayed when the store cannot know (restart fence) and
        StoreUnavailable when it cannot answer: never a silent True.
        """
        ...


class MemoryReplayStore:
    """Bounded, expiring, in-process store.

    Entries live until the token expires (plus leeway) and are dropped in
    expiry buckets, so each call is O(1) amortised. When full of live entries
    it refuses (store_unavailable) rather than forget a use.

    Restart fence: with ``fence=True`` (the default) tokens issued before this
    store was created are refused, since the uses they had in a previous
    process are unknown here. The fence is the whole second of creation, so a
    token minted in the same second is still accepted.

    Args:
        max_entries: live (token, hop) entries kept at most.
        fence: refuse tokens issued before the store was created.
        leeway: seconds an entry outlives its token's expiry.
        clock: the time source (unix seconds).

    ``consume`` raises ``Replayed`` at the fence and ``StoreUnavailable`` when full.
    """

    BUCKET_SECONDS = 8
    #: consume() never waits on I/O: async servers may call it on the event loop.
    blocking = False

    def __init__(self, max_entries: int = 100_000, *, fence: bool = True, leeway: int = 60,
                 clock: Callable[[], float] = time.time) -> None:
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

    def _purge(self, now: int) -> None:
        heap, buckets, left = self._bucket_heap, self._buckets, self._left
        limit = now // self.BUCKET_SECONDS
        while heap and heap[0] < limit:
            for key in buckets.pop(heapq.heappop(heap)):
                left.pop(key, None)

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        if self.fence is not None and iat < self.fence:
            raise Replayed("token was issued before this verifier started; its earlier uses are unknown")
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
            bucket = (exp + self.leeway) // self.BUCKET_SECONDS + 1
            keys = self._buckets.get(bucket)
            if keys is None:
                keys = self._buckets[bucket] = []
                heapq.heappush(self._bucket_heap, bucket)
            keys.append(key)
            return True
