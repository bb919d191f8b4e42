#!/usr/bin/env python3
"""CPU per admission of the Redis gate: redis-server's and the issuer loop's, now against the baseline.

Starts its own redis-server on a free loopback port (crumb.localservices),
then drives ``RedisGate.admit`` the way the issuer does: batches of N
admissions in one turn of the event loop (distinct devices, fresh nonces,
all admitted), awaited together, turn after turn. For each batch size and
round it measures, per admission:

  redis   CPU of the redis-server process (all its threads, from
          /proc/<pid>/task/*/schedstat in ns; /proc/<pid>/stat ticks where
          schedstat is missing)
  client  CPU of this process (time.process_time), less that of the same
          driving loop against a gate that answers at once ("driver"), so
          what remains is the gate's own work: keys and arguments, RESP
          encoding, parsing the reply, settling the futures

for three gates, interleaved round by round so that both see the same
machine: ``driver`` (no Redis), ``baseline`` (a frozen copy, below, of the
gate and the admission script before they were made cheaper: hash buckets,
HMGET + HSET + PEXPIRE, quadratic RESP encoding) and ``current``
(crumb.issuer.gate.RedisGate as it is). Prints medians over the rounds and
the median of the per-round ratios current/baseline.

    .venv/bin/python tools/redis_admission_bench.py [--batches 32,128] [--rounds 7] [--admissions 4096] [--json]

Each round runs a few tenths of a second; the defaults take ~5 s. The
client and redis-server alternate (one round trip at a time), so together
they keep about one core busy, not two.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import glob
import json
import math
import os
import statistics
import sys
import time

from crumb.issuer.codes import Refusal
from crumb.issuer.gate import RedisGate
from crumb.issuer.resp import RedisClient, RedisReplyError, RedisUnavailable
from crumb.localservices import RedisServer

# ---------------------------------------------------------------------------------------------------------------
# BASELINE: the gate as it was before this benchmark's change (crumb.issuer.gate and resp.encode at a9d13e4),
# frozen here to compare against in the same run. Not used by the issuer.

BASELINE_ADMIT_LUA = """
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
BASELINE_MAX_ADMIT_BATCH = 256
BASELINE_REVOKED_KEY = "crumb:revoked"


def baseline_encode(args: tuple) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        kind = type(arg)
        if kind is str:
            arg = arg.encode()
        elif kind is not bytes:
            arg = str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def _baseline_rate_limited(wait: float, rate: float) -> Refusal:
    return Refusal("rate_limited", f"over this device's rate of {rate:g} tokens/s; retry in {wait:.2f}s",
                   retry_after=max(1, math.ceil(wait)))


class BaselineGate:
    """crumb.issuer.gate.RedisGate before the change (same logic, old script, old encoding)."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.client = RedisClient(url, timeout=timeout)
        self._sha: str | None = None
        self._pending: list[tuple] = []

    async def _load(self) -> str:
        sha = await self.client.call("SCRIPT", "LOAD", BASELINE_ADMIT_LUA)
        self._sha = sha.decode() if isinstance(sha, bytes) else sha
        return self._sha

    def admit(self, device: str, nonce: bytes, nonce_ttl: int, cost: int, rate: float, burst: int,
              now: float) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        pending = self._pending
        if not pending:
            loop.call_soon(self._flush)
        pending.append(((f"crumb:n:{device}:{nonce.hex()}", f"crumb:r:{device}"),
                        (device, nonce_ttl, cost, repr(float(rate)), burst, int(now * 1000)), fut))
        if len(pending) >= BASELINE_MAX_ADMIT_BATCH:
            self._flush()
        return fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        proto = self.client.connected()
        if proto is None or self._sha is None:
            asyncio.get_running_loop().create_task(self._admit_batch(batch))
            return
        keys, args = self._script_args(batch)
        reply = proto.send(baseline_encode(("EVALSHA", self._sha, len(keys), *keys, *args)))
        reply.add_done_callback(functools.partial(self._replied, batch))

    @staticmethod
    def _script_args(batch: list[tuple]) -> tuple[list, list]:
        keys = [BASELINE_REVOKED_KEY]
        args: list = []
        for (nonce, bucket), request, _ in batch:
            keys += (nonce, bucket)
            args += request
        return keys, args

    def _replied(self, batch: list[tuple], reply: asyncio.Future) -> None:
        error = reply.exception() if not reply.cancelled() else RedisUnavailable("cancelled")
        if isinstance(error, RedisReplyError) and str(error).startswith("NOSCRIPT"):
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
                fut.set_exception(_baseline_rate_limited(result / 1000, float(rate)))

    async def close(self) -> None:
        await self.client.close()

# END OF BASELINE
# ---------------------------------------------------------------------------------------------------------------


class DriverGate:
    """Answers at once: the cost of the driving loop itself, subtracted from the others' client CPU."""

    def admit(self, device, nonce, nonce_ttl, cost, rate, burst, now) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def close(self) -> None:
        pass


def redis_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid``, all threads, in ns."""
    total, found = 0, False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total
    with open(f"/proc/{pid}/stat") as f:  # utime + stime, in clock ticks
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


# Every admission is admitted: a device comes back every DEVICES admissions, far within its rate.
DEVICES = 1024
RATE, BURST, COST, NONCE_TTL = 1000.0, 1000, 1, 31


async def drive(gate, batch: int, turns: int, counter: list[int]) -> None:
    admit = gate.admit
    n = counter[0]
    for _ in range(turns):
        now = time.time()
        futs = []
        for _ in range(batch):
            futs.append(admit(f"bench-{n % DEVICES:05d}", n.to_bytes(12, "big"), NONCE_TTL, COST, RATE, BURST, now))
            n += 1
        await futs[-1]  # the whole batch is answered by one reply
        for fut in futs:
            if fut.result() is not None:
                raise RuntimeError(f"expected every admission to be admitted, got {fut.result()!r}")
    counter[0] = n


async def run(args) -> dict:
    batches = [int(b) for b in args.batches.split(",")]
    with RedisServer() as server:
        pid = server.proc.pid
        admin = RedisClient(server.url)
        gates = {"driver": DriverGate(), "baseline": BaselineGate(server.url), "current": RedisGate(server.url)}
        counter = [int(time.time() * 1000) << 20]  # fresh nonces
        for gate in gates.values():  # connect, load the script, warm up
            for b in batches:
                await drive(gate, b, 8, counter)
        samples: dict = {b: {name: {"redis": [], "client": []} for name in gates} for b in batches}
        for rnd in range(args.rounds):
            order = list(gates) if rnd % 2 == 0 else list(gates)[::-1]
            for b in batches:
                turns = max(1, args.admissions // b)
                for name in order:
                    await admin.call("FLUSHALL")
                    r0, c0 = redis_cpu_ns(pid), time.process_time()
                    await drive(gates[name], b, turns, counter)
                    c1, r1 = time.process_time(), redis_cpu_ns(pid)
                    n = turns * b
                    samples[b][name]["redis"].append((r1 - r0) / 1000 / n)
                    samples[b][name]["client"].append((c1 - c0) * 1e6 / n)
        for gate in gates.values():
            await gate.close()
        await admin.close()
    result: dict = {"rounds": args.rounds, "admissions_per_round": args.admissions, "loop": args.loop,
                    "batches": {}}
    for b in batches:
        s = samples[b]
        driver = s["driver"]["client"]
        runs = {}  # gate -> figure -> per-round values, the client's less the driving loop's
        for name in ("baseline", "current"):
            client = [c - d for c, d in zip(s[name]["client"], driver)]
            runs[name] = {"redis": s[name]["redis"], "client": client,
                          "total": [r + c for r, c in zip(s[name]["redis"], client)]}
        figures: dict = {name: {**{f"{k}_us": statistics.median(v) for k, v in runs[name].items()},
                                "redis_runs": [round(x, 2) for x in runs[name]["redis"]],
                                "client_runs": [round(x, 2) for x in runs[name]["client"]]}
                         for name in runs}
        figures["driver_client_us"] = statistics.median(driver)
        figures["ratio_current_to_baseline"] = {
            k: statistics.median([c / b_ for c, b_ in zip(runs["current"][k], runs["baseline"][k])])
            for k in ("redis", "client", "total")}
        result["batches"][b] = figures
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="32,128", help="admissions per event-loop turn, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (medians are over these)")
    parser.add_argument("--admissions", type=int, default=4096, help="admissions per gate, batch size and round")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop even if uvloop is installed")
    parser.add_argument("--json", action="store_true", help="print the figures (and every round's) as JSON")
    args = parser.parse_args(argv)
    runner = asyncio.run
    args.loop = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            runner, args.loop = uvloop.run, "uvloop"
        except ImportError:
            pass
    result = runner(run(args))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"CPU per admission, µs (medians of {args.rounds} rounds of {args.admissions}; loop: {args.loop}; "
          f"client = this process less the driving loop)")
    print(f"{'batch':>5}  {'gate':<9} {'redis':>7} {'client':>7} {'total':>7}")
    for b, r in result["batches"].items():
        for name in ("baseline", "current"):
            x = r[name]
            print(f"{b:>5}  {name:<9} {x['redis_us']:7.2f} {x['client_us']:7.2f} {x['total_us']:7.2f}")
        q = r["ratio_current_to_baseline"]
        print(f"{b:>5}  {'ratio':<9} {q['redis']:7.3f} {q['client']:7.3f} {q['total']:7.3f}"
              f"   (current/baseline, median of per-round ratios; driver loop {r['driver_client_us']:.2f} µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
