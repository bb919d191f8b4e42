"""Admission: the per-request checks that must agree across issuer processes.

For an authenticated request the gate, in this order, refuses a revoked
device, a device nonce seen before, and a device over its rate. In memory
(one process) these are a set, a NonceCache and TokenBuckets. With Redis
(several processes behind one address) one Lua script does all three
atomically, for all the requests of one turn of the event loop in one
round trip; if Redis cannot answer, the request is refused with
store_unavailable (fail closed), never admitted.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Awaitable, Callable, Protocol

from .codes import Refusal
from .limits import NonceCache, TokenBuckets
from .resp import RedisClient, RedisReplyError, RedisUnavailable, encode

KEY_PREFIX = "crumb:"
REVOKED_KEY = KEY_PREFIX + "revoked"


def nonce_key(device: str, nonce: bytes) -> str:
    return f"{KEY_PREFIX}n:{device}:{nonce.hex()}"


def bucket_key(device: str) -> str:
    return f"{KEY_PREFIX}r:{device}"


class Gate(Protocol):
    def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
              now: float) -> Awaitable[None] | None:
        """Admit or raise Refusal (revoked, replayed, rate_limited, store_unavailable).

        A gate that can answer at once (MemoryGate) returns None; one that
        must ask elsewhere (RedisGate) returns an awaitable that does. The
        issuer awaits only the latter: no coroutine per request in memory.
        """
        ...


def _rate_limited(wait: float, rate: float) -> Refusal:
    return Refusal("rate_limited", f"over this device's rate of {rate:g} tokens/s; retry in {wait:.2f}s",
                   retry_after=max(1, math.ceil(wait)))


class MemoryGate:
    def __init__(self, max_nonces: int = 1_000_000, max_devices: int = 1_000_000) -> None:
        self.nonces = NonceCache(max_nonces)
        self.buckets = TokenBuckets(max_devices)

    def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
              now: float) -> None:
        # (Revocation in memory mode is the registry's set, checked by the issuer.)
        if not self.nonces.add(device.encode() + b"\0" + nonce, now + nonce_ttl, now):
            raise Refusal("replayed", "this device nonce was already used; every request needs a fresh nonce")
        wait = self.buckets.take(device, cost, rate, burst, now)
        if wait:
            raise _rate_limited(wait, rate)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass


# One call admits a batch: every request that reached the gate in one turn of
# the event loop, in order (one round trip and one script run instead of one
# per request). KEYS: revoked set, then a nonce key and a bucket key per
# request. ARGV, 6 per request: device, nonce ttl (s), cost, rate (/s),
# burst, now (ms). Returns one result per request: 0 (admitted), -1
# (revoked), -2 (replayed) or the ms until the bucket holds `cost`.
ADMIT_LUA = """
local out = {}
for i = 0, #ARGV / 6 - 1 do
  local a, nonce, bucket = i * 6, KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local r = 0
  if redis.call('SISMEMBER', KEYS[1], ARGV[a + 1]) == 1 then r = -1
  elseif not redis.call('SET', nonce, '1', 'NX', 'EX', ARGV[a + 2]) then r = -2
  else
    local cost, rate, burst, now = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]),
                                   tonumber(ARGV[a + 6])
    local b = redis.call('HMGET', bucket, 't', 'ts')
    local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
    if tokens < cost then
      r = math.max(1, math.ceil((cost - tokens) * 1000 / rate))
    else
      tokens = tokens - cost
    end
    redis.call('HSET', bucket, 't', tostring(tokens), 'ts', ARGV[a + 6])
    redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  end
  out[i + 1] = r
end
return out
"""
MAX_ADMIT_BATCH = 256


class RedisGate:
    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.client = RedisClient(url, timeout=timeout)
        self.url = url
        self._sha: str | None = None
        self._pending: list[tuple] = []  # (keys, args, future) of this turn of the event loop

    async def _load(self) -> str:
        sha = await self.client.call("SCRIPT", "LOAD", ADMIT_LUA)
        self._sha = sha.decode() if isinstance(sha, bytes) else sha
        return self._sha

    def publish_revocations_from(self, source: Callable[[], list[str]]) -> None:
        """On every (re)connection, publish ``source()`` (locally known revocations) to Redis.

        A union: nothing is ever un-revoked. A Redis restarted without its
        data so gets the revocations this issuer knows back before it admits
        anything.
        """
        async def publish() -> None:
            devices = source()
            for i in range(0, len(devices), 512):
                await self.client.call("SADD", REVOKED_KEY, *devices[i:i + 512])

        self.client.on_connect = publish

    def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
              now: float) -> asyncio.Future:
        """A future that resolves when Redis has admitted the request, or raises its Refusal."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending = self._pending
        if not pending:
            loop.call_soon(self._flush)
        pending.append(((nonce_key(device, nonce), bucket_key(device)),
                        (device, nonce_ttl, cost, repr(float(rate)), burst, int(now * 1000)), fut))
        if len(pending) >= MAX_ADMIT_BATCH:
            self._flush()
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        proto = self.client.connected()
        if proto is None or self._sha is None:  # connect (and load the script) first
            asyncio.get_running_loop().create_task(self._admit_batch(batch))
            return
        keys, args = self._script_args(batch)
        reply = proto.send(encode(("EVALSHA", self._sha, len(keys), *keys, *args)))
        reply.add_done_callback(functools.partial(self._replied, batch))

    @staticmethod
    def _script_args(batch: list[tuple]) -> tuple[list, list]:
        keys = [REVOKED_KEY]
        args: list = []
        for (nonce, bucket), request, _ in batch:
            keys += (nonce, bucket)
            args += request
        return keys, args

    def _replied(self, batch: list[tuple], reply: asyncio.Future) -> None:
        error = reply.exception() if not reply.cancelled() else RedisUnavailable("cancelled")
        if isinstance(error, RedisReplyError) and str(error).startswith("NOSCRIPT"):  # Redis restarted empty
            self._sha = None
            asyncio.get_running_loop().create_task(self._admit_batch(batch))
            return
        self._settle(batch, None if error is not None else reply.result(), error)

    async def _admit_batch(self, batch: list[tuple]) -> None:
        keys, args = self._script_args(batch)
        try:
            try:
                results = await self.client.call("EVALSHA", self._sha or await self._load(), len(keys), *keys, *args)
            except RedisReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                results = await self.client.call("EVALSHA", await self._load(), len(keys), *keys, *args)
        except (RedisUnavailable, RedisReplyError) as e:
            self._settle(batch, None, e)
        else:
            self._settle(batch, results, None)

    @staticmethod
    def _settle(batch: list[tuple], results, error: BaseException | None) -> None:
        """Answer each request of ``batch``: admitted, or its Refusal (all store_unavailable on ``error``)."""
        if error is None and (not isinstance(results, list) or len(results) != len(batch)):
            error = RedisReplyError(f"the admission script answered {results!r}")
        if error is not None:
            if isinstance(error, RedisUnavailable):
                refusal = Refusal("store_unavailable", f"Redis cannot answer ({error}); failing closed", retry_after=1)
            else:
                refusal = Refusal("store_unavailable", f"Redis refused the admission script ({error}); failing closed",
                                  retry_after=1)
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(refusal)
            return
        for ((_, _), (device, _, _, rate, _, _), fut), result in zip(batch, results):
            if fut.done():
                continue
            if result == 0:
                fut.set_result(None)
            elif result == -1:
                fut.set_exception(Refusal("revoked", f"device {device!r} is revoked"))
            elif result == -2:
                fut.set_exception(Refusal("replayed",
                                          "this device nonce was already used; every request needs a fresh nonce"))
            else:
                fut.set_exception(_rate_limited(result / 1000, float(rate)))

    async def ping(self) -> bool:
        try:
            return await self.client.call("PING") == "PONG"
        except (RedisUnavailable, RedisReplyError):
            return False

    async def close(self) -> None:
        await self.client.close()
