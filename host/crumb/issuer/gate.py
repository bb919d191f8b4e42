"""Admission: the per-request checks that must agree across issuer processes.

For an authenticated request the gate, in this order, refuses a revoked
device, a device nonce seen before, and a device over its rate. In memory
(one process) these are a set, a NonceCache and TokenBuckets. With Redis
(several processes behind one address) one Lua script does all three
atomically in one round trip; if Redis cannot answer, the request is
refused with store_unavailable (fail closed), never admitted.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

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
    async def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
                    now: float) -> None:
        """Return if admitted; raise Refusal (revoked, replayed, rate_limited, store_unavailable)."""
        ...


def _rate_limited(wait: float, rate: float) -> Refusal:
    return Refusal("rate_limited", f"over this device's rate of {rate:g} tokens/s; retry in {wait:.2f}s",
                   retry_after=max(1, math.ceil(wait)))


class MemoryGate:
    def __init__(self, max_nonces: int = 1_000_000, max_devices: int = 1_000_000) -> None:
        self.nonces = NonceCache(max_nonces)
        self.buckets = TokenBuckets(max_devices)

    async def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
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


# KEYS: revoked set, nonce key, bucket key. ARGV: device, nonce ttl (s), cost, rate (/s), burst, now (ms).
# Returns 0 (admitted), -1 (revoked), -2 (replayed) or the ms until the bucket holds `cost`.
ADMIT_LUA = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return -2 end
local cost, rate, burst, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[3], 't', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
if tokens < cost then
  redis.call('HSET', KEYS[3], 't', tostring(tokens), 'ts', ARGV[6])
  redis.call('PEXPIRE', KEYS[3], math.ceil(burst * 1000 / rate) + 1000)
  return math.max(1, math.ceil((cost - tokens) * 1000 / rate))
end
redis.call('HSET', KEYS[3], 't', tostring(tokens - cost), 'ts', ARGV[6])
redis.call('PEXPIRE', KEYS[3], math.ceil(burst * 1000 / rate) + 1000)
return 0
"""


class RedisGate:
    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.client = RedisClient(url, timeout=timeout)
        self.url = url
        self._sha: str | None = None
        self._prefix: bytes | None = None

    async def _load_prefix(self) -> bytes:
        # "*12 EVALSHA <sha> 3" is the same for every call: encode it once.
        sha = await self._load()
        self._prefix = b"*12\r\n" + encode(("EVALSHA", sha, 3))[4:]
        return self._prefix

    @staticmethod
    def _skip(args: tuple) -> int:
        return 4 if len(args) < 10 else 5  # the array header encode() wrote for ``args`` alone

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

    async def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
                    now: float) -> None:
        args = (REVOKED_KEY, nonce_key(device, nonce), bucket_key(device),
                device, nonce_ttl, cost, repr(float(rate)), burst, int(now * 1000))
        try:
            prefix = self._prefix or await self._load_prefix()
            try:
                result = await self.client.call_encoded(prefix + encode(args)[self._skip(args):])
            except RedisReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                self._prefix = None
                result = await self.client.call("EVALSHA", await self._load(), 3, *args)
        except RedisUnavailable as e:
            raise Refusal("store_unavailable", f"Redis cannot answer ({e}); failing closed", retry_after=1) from None
        except RedisReplyError as e:
            raise Refusal("store_unavailable", f"Redis refused the admission script ({e}); failing closed",
                          retry_after=1) from None
        if result == 0:
            return
        if result == -1:
            raise Refusal("revoked", f"device {device!r} is revoked")
        if result == -2:
            raise Refusal("replayed", "this device nonce was already used; every request needs a fresh nonce")
        raise _rate_limited(result / 1000, rate)

    async def ping(self) -> bool:
        try:
            return await self.client.call("PING") == "PONG"
        except (RedisUnavailable, RedisReplyError):
            return False

    async def close(self) -> None:
        await self.client.close()
