#!/usr/bin/env python3
"""CPU per admission of the Redis gate: redis-server's and the issuer loop's, against the floor.

Starts its own redis-server on a free loopback port (crumb.tooling.localservices),
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

for three gates, interleaved round by round so that all see the same
machine: ``driver`` (no Redis), ``floor`` (the same gate and client with a
script that only records each nonce: the least an admission can cost) and
``current`` (crumb.issuer.gate.RedisGate as it is: revocation, nonce and
token bucket). Prints medians over the rounds and the median of the
per-round ratios current/floor.

    .venv/bin/python tools/redis_admission_bench.py [--batches 32,128] [--rounds 7] [--admissions 4096] [--json]

Each round runs a few tenths of a second; the defaults take ~5 s. The
client and redis-server alternate (one round trip at a time), so together
they keep about one core busy, not two.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import statistics
import sys
import time

from crumb.issuer.gate import RedisGate
from crumb.issuer.resp import RedisClient
from crumb.tooling.localservices import RedisServer

# The floor: what any admission must cost at the least, one SET NX EX of its nonce per request, sent and
# answered exactly as the gate's own script is (same keys, arguments, batching and reply), so that the
# difference between the two is the revocation check and the token bucket.
FLOOR_LUA = """
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  if redis.call('SET', KEYS[2 * i], '1', 'NX', 'EX', ARGV[5 * i - 2]) then out[i] = '0' else out[i] = '-2' end
end
return table.concat(out, ' ')
"""


class FloorGate(RedisGate):
    script = FLOOR_LUA



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
        gates = {"driver": DriverGate(), "floor": FloorGate(server.url), "current": RedisGate(server.url)}
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
        for name in ("floor", "current"):
            client = [c - d for c, d in zip(s[name]["client"], driver)]
            runs[name] = {"redis": s[name]["redis"], "client": client,
                          "total": [r + c for r, c in zip(s[name]["redis"], client)]}
        figures: dict = {name: {**{f"{k}_us": statistics.median(v) for k, v in runs[name].items()},
                                "redis_runs": [round(x, 2) for x in runs[name]["redis"]],
                                "client_runs": [round(x, 2) for x in runs[name]["client"]]}
                         for name in runs}
        figures["driver_client_us"] = statistics.median(driver)
        figures["ratio_current_to_floor"] = {
            k: statistics.median([c / f for c, f in zip(runs["current"][k], runs["floor"][k])])
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
        for name in ("floor", "current"):
            x = r[name]
            print(f"{b:>5}  {name:<9} {x['redis_us']:7.2f} {x['client_us']:7.2f} {x['total_us']:7.2f}")
        q = r["ratio_current_to_floor"]
        print(f"{b:>5}  {'ratio':<9} {q['redis']:7.3f} {q['client']:7.3f} {q['total']:7.3f}"
              f"   (current/floor, median of per-round ratios; driver loop {r['driver_client_us']:.2f} µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
