"""A replay store in Redis, shared by every replica of a service.

One key per (token id, hop) holds the uses left and expires with the token
(``exp`` plus the data set's leeway, plus 1 s), so Redis holds only live
tokens. One Lua script reads and spends a use atomically, in one round trip.

The data set's memory: every client has a ``leeway`` (at least its
verifier's) and a ``clock_spread`` (how far apart the replicas' clocks may
be, 1 s by default), and the data set remembers the longest
``leeway + ceil(clock_spread)`` any client asked for (key ``PREFIX leeway``);
entries are kept that long past exp, and the fence reaches that far, so a
use spent at one replica is remembered for as long as any replica's
verifier would accept the token, by its own clock. A client asking for more than the data set kept raises it,
and (with the fence) moves the fence to now: uses spent under the shorter
memory may be forgotten already. A client without the fence cannot do that
safely, and fails closed (``store_unavailable``) until the data set keeps
enough.

Restart fence: a Redis restarted without persistence (or flushed) has
forgotten which tokens were spent. Every consumption also reads a fence key
that holds the second the current data set began; when it is missing, the
data set is new and the fence is set to now. Tokens some verifier could have
accepted before the fence, ``iat <= fence + memory``, are refused as
``replayed``, exactly like a restarted in-memory verifier. Redis must run with
``maxmemory-policy noeviction``: an evicted key is a forgotten use.

Redis unreachable, timing out or refusing a write: ``StoreUnavailable``
(``store_unavailable``). Nothing is ever answered from a guess, and the next
call tries again, so service resumes by itself when Redis returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import Replayed, StoreUnavailable
from ..replay import DEFAULT_LEEWAY

#: Seconds the clocks of replicas sharing a data set may differ by, by default. NTP keeps
#: servers' clocks milliseconds apart; any difference at all can put two replicas in
#: different whole seconds, which a second covers.
DEFAULT_CLOCK_SPREAD = 1.0

# KEYS[1] = fence key, KEYS[2] = leeway key, KEYS[3] = use key (absent: only set the data set up).
# ARGV = now (whole seconds), this client's memory (leeway + clock spread), "1" if it fences, exp, uses.
# Returns {taken: 1, 0 (none left) or -1 (the data set keeps less than this client needs), fence, leeway}.
_CONSUME = """
local now, own = tonumber(ARGV[1]), tonumber(ARGV[2])
local fences = ARGV[3] == '1'
local fence = redis.call('GET', KEYS[1])
local keep = tonumber(redis.call('GET', KEYS[2]))
if not keep or keep < own then
  if keep and not fences then
    return {-1, fence, keep}
  end
  keep = own
  redis.call('SET', KEYS[2], own)
  if fences then
    redis.call('SET', KEYS[1], now)
    fence = ARGV[1]
  end
elseif fences and not fence then
  redis.call('SET', KEYS[1], now)
  fence = ARGV[1]
end
if not KEYS[3] then
  return {1, fence, keep}
end
local left = redis.call('GET', KEYS[3])
if not left then
  local ttl = math.max(1, tonumber(ARGV[4]) + keep + 1 - now)
  redis.call('SET', KEYS[3], tonumber(ARGV[5]) - 1, 'EX', ttl)
  return {1, fence, keep}
end
if tonumber(left) <= 0 then
  return {0, fence, keep}
end
redis.call('DECR', KEYS[3])
return {1, fence, keep}
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
    """Replay store on Redis (``redis://`` URL or a ``redis.Redis`` client).

    Args:
        client: a ``redis://`` URL (a fail-fast client is made) or a ``redis.Redis``.
        prefix: the keys' prefix: the clients of one data set share it.
        leeway: the largest clock leeway of the verifiers using this client.
        clock_spread: seconds the clocks of the replicas sharing the data set may
            differ by (NTP keeps them well within the default, 1 s). The data set
            keeps spent uses past exp, and its fence reaches past its start, by
            the largest ``leeway + ceil(clock_spread)`` of its clients: a replica
            whose clock is behind the others' judges a token later than they do,
            and one whose clock is ahead opened the data set earlier by theirs.
        fence: refuse tokens a verifier could have accepted before the data set began.
        timeout: seconds for a Redis answer (URL only).
        clock: the time source (unix seconds), the verifiers'.

    Raises:
        ValueError: a negative leeway or clock spread; or, without the fence, a data
            set that keeps spent uses for less time than this client needs (when Redis answers).

    ``consume`` raises ``Replayed`` at the fence and ``StoreUnavailable`` when
    Redis cannot answer (or, without the fence, keeps uses for too short a time).
    """

    #: consume() does network I/O: async servers should run it off the event loop.
    blocking = True

    def __init__(self, client: redis.Redis | str, *, prefix: str = "crumb:", leeway: int = DEFAULT_LEEWAY,
                 clock_spread: float = DEFAULT_CLOCK_SPREAD, fence: bool = True, timeout: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        if leeway < 0:
            raise ValueError("a replay store's leeway is 0 or more seconds")
        if not clock_spread >= 0:
            raise ValueError("a replay store's clock spread is 0 or more seconds")
        self.client = connect(client, timeout=timeout) if isinstance(client, str) else client
        self.prefix = prefix
        self.fence_key = f"{prefix}fence"
        self.leeway_key = f"{prefix}leeway"
        self.leeway = leeway
        self.clock_spread = clock_spread
        #: seconds this client needs spent uses kept past exp (and the fence to reach past its start)
        self.memory = leeway + math.ceil(clock_spread)
        self.fence = fence
        self.clock = clock
        self._consume = self.client.register_script(_CONSUME)
        try:  # set the data set up now if we can; otherwise the first consumption does
            taken, _, keep = self._run([])
        except redis.RedisError:
            return
        if taken < 0:
            raise ValueError(self._too_short(keep))

    def __repr__(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"RedisReplayStore({kw.get('host', kw.get('path'))}:{kw.get('port', '')}, prefix={self.prefix!r})"

    def key(self, cti: bytes, hop: str) -> str:
        # hex has no '/', so (cti, hop) pairs map to distinct keys whatever the hop name.
        return f"{self.prefix}use:{cti.hex()}/{hop}"

    def _run(self, use: list[str], exp: int = 0, uses: int = 1) -> tuple[int, bytes | None, int]:
        taken, fence, keep = self._consume(
            keys=[self.fence_key, self.leeway_key, *use],
            args=[int(self.clock()), self.memory, "1" if self.fence else "0", exp, uses])
        return int(taken), fence, int(keep)

    def _too_short(self, keep: int) -> str:
        return (f"the Redis replay store at prefix {self.prefix!r} keeps spent uses {keep} s past exp, and this "
                f"client needs {self.memory} s (leeway {self.leeway} + clock spread {math.ceil(self.clock_spread)}); "
                f"without the fence it cannot raise that safely: give every client the same leeway and clock "
                f"spread, or start the data set over")

    def consume(self, cti: bytes, hop: str, uses: int, iat: int, exp: int) -> bool:
        try:
            taken, fence, keep = self._run([self.key(cti, hop)], exp, uses)
        except redis.RedisError as e:
            raise StoreUnavailable(f"the Redis replay store cannot answer ({type(e).__name__}: {e})") from None
        if taken < 0:
            raise StoreUnavailable(self._too_short(keep))
        if self.fence and (fence is None or iat <= int(fence) + keep):
            raise Replayed("token was issued before the replay store's data set began, or within its leeway of "
                           "that (Redis restarted or was flushed); its earlier uses are unknown")
        return bool(taken)

    def fence_clear_at(self) -> int | None:
        """The first ``iat`` the data set's fence lets through (None: this client does not fence).

        Sets the data set up if it is new (as the first consumption would). Tooling that starts a
        fresh deployment waits for this second before issuing tokens.

        Raises:
            StoreUnavailable: Redis cannot answer.
        """
        if not self.fence:
            return None
        try:
            _, fence, keep = self._run([])
        except redis.RedisError as e:
            raise StoreUnavailable(f"the Redis replay store cannot answer ({type(e).__name__}: {e})") from None
        return None if fence is None else int(fence) + keep + 1

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
