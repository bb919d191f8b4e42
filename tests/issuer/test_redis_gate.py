"""RedisGate against a real redis-server: the command it builds, the bucket's stored form, order within a batch,
agreement with MemoryGate, and failing closed on answers it cannot read."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from crumb.issuer.codes import Refusal
from crumb.issuer.gate import MAX_ADMIT_BATCH, REVOKED_KEY, MemoryGate, RedisGate, bucket_key, nonce_key
from crumb.issuer.resp import RedisClient, encode

_tags = iter(range(1_000_000))


def fresh(name: str) -> str:
    """A device id no other test (nor an earlier run on this Redis) has used."""
    return f"{name}-{time.time_ns()}-{next(_tags)}"


def outcome(result) -> tuple:
    if isinstance(result, Refusal):
        return result.code, result.retry_after
    assert result is None, result
    return None, None


async def one_turn(gate: RedisGate, asks: list[tuple]) -> list:
    """``asks`` (device, nonce, nonce_ttl, cost, rate, burst, now) admitted in one turn of the loop."""
    return await asyncio.gather(*(gate.admit(*a) for a in asks), return_exceptions=True)


def expires_in(pttl: int, ttl_ms: float, asked: float) -> bool:
    """Whether a key set with ``ttl_ms`` after ``asked`` (time.monotonic()) shows ``pttl`` now.

    Redis counts down in real time: by now it has lost at most the time since
    the request (plus a millisecond of rounding), however slow the machine was.
    """
    waited_ms = (time.monotonic() - asked) * 1000
    assert ttl_ms - waited_ms - 1 <= pttl <= ttl_ms, (pttl, ttl_ms, waited_ms)
    return True


def run(redis_server, body) -> None:
    async def main() -> None:
        gate = RedisGate(redis_server.url)
        admin = RedisClient(redis_server.url)
        try:
            await body(gate, admin)
        finally:
            await gate.close()
            await admin.close()

    asyncio.run(main())


def test_encode_accepts_str_bytes_and_numbers():
    assert encode(("SET", b"k\x00", 12, 1.5, "é")) == (
        b"*5\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$2\r\n12\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n")
    assert encode(()) == b"*0\r\n"


def test_command_is_the_generic_encoding_of_the_documented_arguments():
    gate = RedisGate("redis://127.0.0.1:1/0")  # never connects
    now = 1_700_000_000.25
    batch = [("dev-1", b"\x00\x01nonce", 31, 1, 2, 5, now - 0.004, None),
             ("gerät-ü", b"\xff" * 16, 30.2, 3, 0.5, 2, now, None)]  # non-ASCII id: lengths in bytes; ttl rounded up
    sha = "f" * 40
    expected = encode(("EVALSHA", sha, 5, REVOKED_KEY,
                       nonce_key("dev-1", b"\x00\x01nonce"), bucket_key("dev-1"),
                       nonce_key("gerät-ü", b"\xff" * 16), bucket_key("gerät-ü"),
                       int(now * 1000),  # the batch's clock: its last request's
                       "dev-1", 31, 1, "2.0", 5,
                       "gerät-ü", 31, 3, "0.5", 2))
    assert gate._command(sha, batch) == expected
    assert gate._command(sha, batch) == expected  # again, from the cache of formatted profiles


def test_bucket_is_one_string_that_refuses_with_the_wait_refills_and_expires(redis_server):
    async def body(gate: RedisGate, admin: RedisClient) -> None:
        dev = fresh("bucket")
        t0 = 1_700_000_000.0
        # burst 2, 0.5 tokens/s: two at once, then the third waits 2 s.
        asked = time.monotonic()
        got = await one_turn(gate, [(dev, b"nonce-01", 60, 1, 0.5, 2, t0), (dev, b"nonce-02", 60, 1, 0.5, 2, t0)])
        assert [outcome(r) for r in got] == [(None, None), (None, None)]
        assert await admin.call("TYPE", bucket_key(dev)) == "string"
        assert await admin.call("GET", bucket_key(dev)) == b"0 %d" % (t0 * 1000)
        assert expires_in(await admin.call("PTTL", bucket_key(dev)), 2 / 0.5 * 1000 + 1000, asked)  # full after burst/rate
        assert await admin.call("EXISTS", f"crumb:r:{dev}") == 0  # not the old hash

        [r] = await one_turn(gate, [(dev, b"nonce-03", 60, 1, 0.5, 2, t0 + 0.5)])
        assert outcome(r) == ("rate_limited", 2) and "retry in 1.50s" in r.message and "0.5 tokens/s" in r.message
        assert await admin.call("GET", bucket_key(dev)) == b"0.25 %d" % ((t0 + 0.5) * 1000)  # refilled, kept
        [r] = await one_turn(gate, [(dev, b"nonce-04", 60, 1, 0.5, 2, t0 + 1.75)])
        assert outcome(r) == ("rate_limited", 1) and "retry in 0.25s" in r.message
        [r] = await one_turn(gate, [(dev, b"nonce-05", 60, 1, 0.5, 2, t0 + 2.0)])  # one token by now
        assert outcome(r) == (None, None)
        # The clock stepping back neither refills nor drains.
        [r] = await one_turn(gate, [(dev, b"nonce-06", 60, 1, 0.5, 2, t0 - 3600)])
        assert outcome(r) == ("rate_limited", 2)
        assert await admin.call("GET", bucket_key(dev)) == b"0 %d" % ((t0 - 3600) * 1000)

        # The key goes once the bucket would be full: burst 1 at 10/s lives 100 ms + 1 s.
        quick = fresh("expiring")
        asked = time.monotonic()
        [r] = await one_turn(gate, [(quick, b"nonce-07", 60, 1, 10.0, 1, t0)])
        assert outcome(r) == (None, None)
        assert expires_in(await admin.call("PTTL", bucket_key(quick)), 1100, asked)
        deadline = time.monotonic() + 5
        while await admin.call("EXISTS", bucket_key(quick)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await admin.call("EXISTS", bucket_key(quick)) == 0
        assert await admin.call("EXISTS", nonce_key(quick, b"nonce-07")) == 1  # the nonce stays for its own ttl

    run(redis_server, body)


def test_one_device_several_times_in_one_batch_is_answered_in_order(redis_server):
    async def body(gate: RedisGate, admin: RedisClient) -> None:
        dev, other = fresh("order"), fresh("order-other")
        now = 1_700_000_000.0
        asks = [(dev, b"nonce-a1", 60, 1, 1.0, 2, now),
                (dev, b"nonce-a1", 60, 1, 1.0, 2, now),    # a replay: takes no token
                (other, b"nonce-a1", 60, 1, 1.0, 2, now),  # the same nonce, another device: fine
                (dev, b"nonce-a2", 60, 1, 1.0, 2, now),    # the second token
                (dev, b"nonce-a3", 60, 1, 1.0, 2, now),    # none left: a whole second to wait
                (dev, b"nonce-a4", 60, 2, 1.0, 2, now)]    # cost 2: two seconds
        got = await one_turn(gate, asks)
        assert [outcome(r) for r in got] == [(None, None), ("replayed", None), (None, None), (None, None),
                                             ("rate_limited", 1), ("rate_limited", 2)]
        assert [r.message for r in got[4:]] == [
            "over this device's rate of 1 tokens/s; retry in 1.00s",
            "over this device's rate of 1 tokens/s; retry in 2.00s"]
        # More than one script call's worth in one turn: split, still in order.
        many = fresh("many")
        asks = [(many, b"nonce-%04d" % i, 60, 1, 0.5, MAX_ADMIT_BATCH + 10, now)
                for i in range(MAX_ADMIT_BATCH + 20)]
        await admin.call("CONFIG", "RESETSTAT")
        got = await one_turn(gate, asks)
        assert [outcome(r)[0] for r in got] == [None] * (MAX_ADMIT_BATCH + 10) + ["rate_limited"] * 10
        stats = (await admin.call("INFO", "commandstats")).decode()
        assert "cmdstat_evalsha:calls=2," in stats, stats  # a script call holds Redis for at most MAX_ADMIT_BATCH

    run(redis_server, body)


def test_redis_gate_agrees_with_memory_gate(redis_server):
    """A random sequence of turns (replays, costs, clock steps back), one clock reading per turn: the same answers
    as the in-memory gate, and revoked devices refused (the issuer checks its own list before a memory gate)."""

    async def body(gate: RedisGate, admin: RedisClient) -> None:
        rng = random.Random(20261129)
        memory = MemoryGate()
        profiles = {fresh("agree-a"): (0.5, 3), fresh("agree-b"): (1.0, 5), fresh("agree-c"): (2.0, 8)}
        revoked = fresh("agree-revoked")
        await admin.call("SADD", REVOKED_KEY, revoked)
        devices = list(profiles)
        used: dict[str, list[bytes]] = {d: [] for d in devices + [revoked]}
        now = 1_700_000_000.0
        seen = set()
        for turn in range(40):
            # Whole eighths of a second: exact in binary and in ms, as the Redis side sees them.
            now += rng.choice([0, 0.125, 0.5, 1.0, 2.375]) if rng.random() > 0.05 else -30
            asks = []
            for _ in range(rng.randint(1, 6)):
                dev = rng.choice(devices + [revoked])
                if used[dev] and rng.random() < 0.2:
                    nonce = rng.choice(used[dev])
                else:
                    nonce = rng.randbytes(8)
                    used[dev].append(nonce)
                rate, burst = profiles.get(dev, (1.0, 5))
                asks.append((dev, nonce, 600, rng.choice([1, 1, 1, 2, 3]), rate, burst, now))
            got = [outcome(r) for r in await one_turn(gate, asks)]
            want = []
            for dev, *rest in asks:
                if dev == revoked:
                    want.append(("revoked", None))
                    continue
                try:
                    want.append(outcome(memory.admit(dev, *rest)))
                except Refusal as e:
                    want.append(outcome(e))
            assert got == want, (turn, asks)
            seen.update(code for code, _ in got)
        assert seen == {None, "replayed", "rate_limited", "revoked"}  # the sequence tried every answer

    run(redis_server, body)


def test_an_old_issuers_hash_bucket_is_neither_read_nor_touched(redis_server):
    async def body(gate: RedisGate, admin: RedisClient) -> None:
        dev = fresh("upgrade")
        now = 1_700_000_000.0
        await admin.call("HSET", f"crumb:r:{dev}", "t", "0", "ts", str(int(now * 1000)))  # empty, by the old script
        [r] = await one_turn(gate, [(dev, b"nonce-u1", 60, 1, 1.0, 2, now)])
        assert outcome(r) == (None, None)  # its own bucket, full
        assert await admin.call("HGETALL", f"crumb:r:{dev}") == [b"t", b"0", b"ts", str(int(now * 1000)).encode()]

    run(redis_server, body)


def test_non_ascii_device_keys_are_the_documented_ones(redis_server):
    async def body(gate: RedisGate, admin: RedisClient) -> None:
        dev = fresh("gerät-ü")
        [r] = await one_turn(gate, [(dev, b"\x00\xffnonce", 60, 1, 1.0, 2, time.time())])
        assert outcome(r) == (None, None)
        assert await admin.call("EXISTS", nonce_key(dev, b"\x00\xffnonce"), bucket_key(dev)) == 2

    run(redis_server, body)


def test_a_script_error_fails_the_whole_batch_closed(redis_server):
    async def body(gate: RedisGate, admin: RedisClient) -> None:
        bad, good = fresh("wrongtype"), fresh("bystander")
        await admin.call("HSET", bucket_key(bad), "x", "1")  # not a string: GET fails inside the script
        got = await one_turn(gate, [(good, b"nonce-w1", 60, 1, 1.0, 2, time.time()),
                                    (bad, b"nonce-w2", 60, 1, 1.0, 2, time.time())])
        assert [outcome(r) for r in got] == [("store_unavailable", 1)] * 2
        assert "Redis refused the admission script" in got[0].message

    run(redis_server, body)


@pytest.mark.parametrize("reply", [b"0 x", b"0", b"0 0 0", b"", [0, 0], None])
def test_an_unreadable_answer_fails_closed(reply):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        batch = [("d", b"nonce-01", 60, 1, 1.0, 2, 0.0, loop.create_future()) for _ in range(2)]
        RedisGate._settle(batch, reply, None)
        for *_, fut in batch:
            with pytest.raises(Refusal) as e:
                fut.result()
            assert e.value.code == "store_unavailable" and e.value.retry_after == 1
            assert "Redis refused the admission script (the admission script answered" in e.value.message

    asyncio.run(main())


def test_admission_bench_runs_and_reports_both_gates():
    """tools/redis_admission_bench.py (its own redis-server), at its smallest."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "redis_admission_bench.py"
    r = subprocess.run([sys.executable, str(tool), "--json", "--rounds", "1", "--admissions", "64",
                        "--batches", "8,32"], capture_output=True, check=False, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["batches"]) == {"8", "32"}
    for figures in result["batches"].values():
        for gate in ("floor", "current"):
            assert figures[gate]["redis_us"] > 0 and figures[gate]["total_us"] > 0
        assert figures["ratio_current_to_floor"]["redis"] > 0
