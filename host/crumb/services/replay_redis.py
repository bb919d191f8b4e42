"""A replay store in Redis, shared by every replica of a service.

One key per (token id, hop) holds the uses left and expires with the token
(``exp`` plus leeway), so Redis holds only live tokens:

- single-use tokens: ``SET key 0 NX EX ttl`` — the first replica to set it
  wins, atomically, in one round trip;
- multi-use tokens: a Lua script reads and decrements the count atomically.

Restart fence: a Redis restarted without persistence (or flushed) has
forgotten which tokens were spent. Every consumption also reads a fence key
that holds the time the current data set began; when it is missing, the data
set is new and the fence is set to now, and tokens issued before the fence are
refused as ``replayed`` — exactly like a restarted in-memory verifier. Redis
must run with ``maxmemory-policy noeviction``: an evicted key is a forgotten use.

Redis unreachable, timing out or refusing a write: ``StoreUnavailable``
(``store_unavailable``). Nothing is ever answered from a guess, and the next
call tries again, so service resumes by itself when Redis returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import Replayed, StoreUnavailable

# KEYS[1] = use key, KEYS[2] = fence key; ARGV = uses, ttl seconds.
# Returns {1 taken | 0 none left, fence or false}.
_CONSUME_COUNTED = """
local fence = redis.call('GET', KEYS[2])
local left = redis.call('GET', KEYS[1])
if not left then
  redis.call('SET', KEYS[1], tonumber(ARGV[1]) - 1, 'EX', tonumber(ARGV[2]))
  return {1, fence}
end
if tonumber(left) <= 0 then
  return {0, fence}
end
redis.call('DECR', KEYS[1])
return {1, fence}
"""


def connect(url: str, *, timeout: float = 0.5) -> redis.Redis:
    """A client that fails fast: short timeouts, one immediate retry on a dropped connection.

    The retry lets a pooled connection that Redis closed (a restart) be replaced
    transparently; timeouts are not retried, since the command may have run.
    """
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, (redis.exceptions.ConnectionError,)),
        health_check_interval=0)


class RedisReplayStore:
    """Replay store on Redis (``redis://`` URL or a ``redis.Redis`` client)."""

    #: consume() does network I/O: async servers should run it off the event loop.
    blocking = True

    def __init__(self, client: redis.Redis | str, *, prefix: str = "crumb:", leeway: int = 60,
                 fence: bool = True, timeout: float = 0.5, clock: Callable[[], float] = time.time) -> None:
        self.client = connect(client, timeout=timeout) if isinstance(client, str) else client
        self.prefix = prefix
        self.fence_key = f"{prefix}fence"
        self.leeway = leeway
        self.fence = fence
        self.clock = clock
        self._counted = self.client.register_script(_CONSUME_COUNTED)
        if fence:
            try:  # set the fence now if we can; otherwise the first consumption does
                self._set_fence()
            except redis.RedisError:
                pass

    def __repr__(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"RedisReplayStore({kw.get('host', kw.get('path'))}:{kw.get('port', '')}, prefix={self.prefix!r})"

    def key(self, cti: bytes, hop: str) -> str:
        # hex has no '/', so (cti, hop) pairs map to distinct keys whatever the hop name.
        return f"{self.prefix}use:{cti.hex()}/{hop}"

    def _set_fence(self) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.fence_key, int(self.clock()), nx=True)
        pipe.get(self.fence_key)
        return int(pipe.execute()[1])

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        key = self.key(cti, hop)
        ttl = max(1, exp + self.leeway - int(self.clock()))
        try:
            if uses == 1:
                pipe = self.client.pipeline(transaction=True)
                pipe.set(key, 0, nx=True, ex=ttl)
                pipe.get(self.fence_key)
                taken, fence = pipe.execute()
            else:
                taken, fence = self._counted(keys=[key, self.fence_key], args=[uses, ttl])
            if self.fence and fence is None:
                fence = self._set_fence()
        except redis.RedisError as e:
            raise StoreUnavailable(f"the Redis replay store cannot answer ({type(e).__name__}: {e})") from None
        if self.fence and iat < int(fence):
            raise Replayed("token was issued before the replay store's data set began "
                           "(Redis restarted or was flushed); its earlier uses are unknown")
        return bool(taken)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
