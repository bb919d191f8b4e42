"""`crumb bench issuer`: tokens/s and latency of the issuer, against the stack's own ceiling.

Three phases, each against a server started here on a free loopback port
(unless --url) and driven by load-generator processes separate from it:

  bare     a bare ASGI endpoint served exactly like the issuer (same uvicorn
           set-up, same socket code) that reads the body and returns a fixed
           CBOR body the size of a token response: the ceiling of the stack
  issuer   one issuer process, in-memory nonces and rate limits
  multi    N issuer processes sharing one port and one Redis (with --processes N)

Clients are real devices as far as the issuer can tell: each connection is
an enrolled device that sends a fresh nonce, its current time and a MAC
with its derived key on every request. Only 200 responses count as tokens;
the first few of each round are verified with the issuer's published keys
as they arrive (a token checked minutes later, after the rounds, may have
expired by then). Figures are for this run on this machine: quote medians
of several runs.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import hmac
import multiprocessing
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ... import cbor
from ...wire import (
    BLOCK_TIME_BYTES,
    CBOR_TYPES,
    MAC_BYTES,
    NONCE_MIN,
    REQ_CLIENT_ID,
    REQ_CRUMB,
    REQ_SCOPE,
    RESP_ACCESS_TOKEN,
    RESP_EXPIRES_IN,
    RESP_TIME,
    RESP_TOKEN_TYPE,
    SCOPE_OP_MARK,
    TOKEN_TYPE_BEARER,
)

BENCH_GROUP = "bench"
BENCH_RESOURCE = "/bench/sensor01"
BENCH_OP = "read"
WARMUP_S = 1.0
SAMPLES = 8  # responses verified (or their refusal codes counted) per load-generator process and round
TTL = 60     # the tokens' lifetime in the bench's policy, seconds


def bench_policy(ttl: int = TTL) -> str:
    """The policy the bench serves: one group that may read /bench/*, at a rate no bench reaches."""
    return f"""
# Written by `crumb bench issuer`: one group that may read /bench/*.
[issuer]
name = "crumb-bench"

[defaults]
ttl = {ttl}
batch = 1
rate = 1000000
burst = 1000000

[groups.{BENCH_GROUP}]
[[groups.{BENCH_GROUP}.allow]]
resource = "/bench/*"
operations = ["{BENCH_OP}"]
"""


BENCH_POLICY = bench_policy()

# The bare endpoint's answer: a CBOR map the size of a single-token response.
BARE_BODY = cbor.dumps({RESP_ACCESS_TOKEN: bytes(140), RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER,
                        RESP_TIME: 1_800_000_000})
_BARE_HEADERS = [(b"content-type", CBOR_TYPES[0].encode()), (b"content-length", str(len(BARE_BODY)).encode()),
                 (b"cache-control", b"no-store")]


async def bare_app(scope, receive, send) -> None:
    """The ceiling: read the body, answer a fixed CBOR body. No routing, no work."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _BARE_HEADERS})
    await send({"type": "http.response.body", "body": BARE_BODY})


def bare_factory():
    return bare_app


# -- services -------------------------------------------------------------------------


def spawn_server(args: list[str], timeout: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start a server child that binds port 0 and prints "listening PORT" once bound: (process, port).

    The child binds the port itself, so no other program can take it between
    our choice and its bind. The timeout is generous: a loaded machine can
    take seconds to start a process, and a child that exits is noticed at once.
    """
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            continue
        line = proc.stdout.readline()
        if not line:  # it exited
            proc.wait()
            raise RuntimeError(f"server exited with code {proc.returncode} before listening:\n"
                               f"{seen.decode(errors='replace')}")
        found = re.match(rb"listening (\d+)", line)
        if found:
            return proc, int(found.group(1))
        seen += line
    _stop(proc)
    raise RuntimeError(f"server did not say its port within {timeout}s:\n{seen.decode(errors='replace')}")


def report_port(port: int) -> None:
    """What a server child started by spawn_server() prints once bound."""
    print(f"listening {port}", flush=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the load generator ---------------------------------------------------------------


class RequestMaker:
    """Signed /token requests for one device, built from a template (a few µs each).

    The bytes are those of crumb.issuer.protocol.build_request (tests check
    it), the device's common request: only the time, the nonce and the MAC
    change between requests. The load generator shares the machine with the
    server it measures, so it does as little as it can per request: nonces
    come from one getrandom() per 512, the time is encoded once a second, the
    MAC starts from the device's keyed HMAC state, and the HTTP head is kept
    per body length.
    """

    def __init__(self, device_id: str, key: bytes, port: int, nonce_bytes: int = NONCE_MIN) -> None:
        self.nonce_bytes = nonce_bytes
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._prefix = (b"\xa3" + cbor.dumps(REQ_SCOPE) + cbor.dumps(f"{BENCH_RESOURCE}{SCOPE_OP_MARK}{BENCH_OP}")
                        + cbor.dumps(REQ_CLIENT_ID) + cbor.dumps(device_id) + cbor.dumps(REQ_CRUMB))
        self.http_head = (f"POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          f"Content-Type: {CBOR_TYPES[0]}\r\nContent-Length: ").encode()
        self._heads: dict[int, bytes] = {}
        self._now, self._time = -1, b""
        self._nonces = b""

    def body(self, now: int, nonce: bytes | None = None) -> bytes:
        if nonce is None:
            if not self._nonces:
                self._nonces = os.urandom(self.nonce_bytes * 512)
            nonce, self._nonces = self._nonces[:self.nonce_bytes], self._nonces[self.nonce_bytes:]
        if now != self._now:
            self._now, self._time = now, now.to_bytes(BLOCK_TIME_BYTES, "big") + b"\x01"  # time, count 1
        # {9: "resource|op", 24: device, -65537: time || count || nonce || MAC}
        mac_input = (self._prefix + cbor.bstr_head(BLOCK_TIME_BYTES + 1 + len(nonce) + MAC_BYTES)
                     + self._time + nonce)
        h = self._mac.copy()
        h.update(mac_input)
        return mac_input + h.digest()[:MAC_BYTES]


    def request(self, now: int) -> bytes:
        body = self.body(now)
        head = self._heads.get(len(body))
        if head is None:
            head = self._heads[len(body)] = self.http_head + str(len(body)).encode() + b"\r\n\r\n"
        return head + body


class Samples:
    """The first SAMPLES answers of a process's round, checked as they arrive.

    A token is verified at once with the issuer's published keys (``keys``;
    None for the bare endpoint, whose answers are not tokens): checked later,
    after rounds of several seconds each, it could have expired, and a bench
    that then ends in a traceback measures nothing. The verifier allows no
    clock leeway: the issuer runs on this host, on this clock. A refusal's
    code is counted. Nothing here raises: what fails is counted by its code.
    """

    def __init__(self, keys: list[bytes] | None) -> None:
        self.verifier = None
        if keys is not None:
            from ...keys import PublicKey
            from ...replay import MemoryReplayStore
            from ...verify import Verifier

            self.verifier = Verifier([PublicKey(k) for k in keys], replay=MemoryReplayStore(fence=False), leeway=0)
        self.taken = 0
        self.verified = 0
        self.failures: dict[str, int] = {}  # token verification failures, by code
        self.codes: dict[str, int] = {}     # refusal codes
        self.example: bytes | None = None   # one token answer's body, for its size

    def take(self, status: int, body: bytes) -> None:
        if self.taken >= SAMPLES:
            return
        self.taken += 1
        if status == 200 and self.example is None:
            self.example = body
        if self.verifier is None:
            return
        from ...errors import CrumbError
        from ...issuer.protocol import parse_response

        try:
            resp = parse_response(body)
            if not resp.ok:
                _count(self.codes, str(resp.code))
                return
            for token, _, _ in resp.tokens:
                self.verifier.verify(token, BENCH_RESOURCE, BENCH_OP, consume=False)
                self.verified += 1
        except CrumbError as e:
            _count(self.failures, e.code)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):  # not an answer crumb writes
            _count(self.failures, "garbled_answer")

    def result(self) -> dict:
        return {"verified": self.verified, "failures": self.failures, "codes": self.codes, "example": self.example}


def _count(tally: dict, key: str, n: int = 1) -> None:
    tally[key] = tally.get(key, 0) + n


class _Client(asyncio.Protocol):
    """One keep-alive connection (one device): a request in flight, the next written when its answer is in.

    Protocol callbacks, not streams: a stream read is a task switch, and the
    load generator shares the machine's cores with the server it measures
    (its CPU per answer is reported, `client_cpu_us`).
    """

    def __init__(self, maker: RequestMaker, start: float, end: float, lat: array.array, tally: dict,
                 samples: Samples, done: asyncio.Future) -> None:
        self.maker, self.start, self.end = maker, start, end
        self.lat, self.tally, self.samples, self.done = lat, tally, samples, done
        self.buf = b""
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._next()

    def _next(self) -> None:
        t0 = time.perf_counter()
        if t0 >= self.end:
            self._close()
            return
        self.t0 = t0
        assert self.transport is not None
        self.transport.write(self.maker.request(int(time.time())))

    def _close(self, error: str | None = None) -> None:
        if error is not None:
            _error(self.tally, error)
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end_of_head = buf.find(b"\r\n\r\n")
        if end_of_head < 0:
            self.buf = buf
            if len(buf) > 16384:
                self._close("LimitOverrunError")
            return
        head = buf[:end_of_head + 2].lower()
        try:  # a missing or garbled status or length is a ValueError, like a broken number
            status = int(head[9:12])
            i = head.index(b"content-length:")
            length = int(head[i + 15:head.index(b"\r\n", i)])
            if length < 0:
                raise ValueError("negative length")
        except ValueError:
            self._close("ValueError")
            return
        body_at = end_of_head + 4
        if len(buf) < body_at + length:
            self.buf = buf
            return
        if len(buf) > body_at + length:  # one request in flight, so one answer: more is a broken server
            self._close("ValueError")
            return
        self.buf = b""
        if self.t0 >= self.start:
            tally = self.tally
            if status == 200:
                tally["ok"] += 1
                self.lat.append(time.perf_counter() - self.t0)
                self.samples.take(status, buf[body_at:])
            elif status < 500:
                tally["refused"] += 1
                self.samples.take(status, buf[body_at:])
            else:
                tally["errors"] += 1
        if b"connection: close" in head:
            self._close()
            return
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:  # the server hung up on a request in flight
            _error(self.tally, type(exc).__name__ if exc is not None else "IncompleteReadError")
        if not self.done.done():
            self.done.set_result(None)


def _error(tally: dict, kind: str) -> None:
    tally["errors"] += 1
    _count(tally.setdefault("error_kinds", {}), kind)


async def _connection(port: int, maker: RequestMaker, start: float, end: float, lat: array.array,
                      tally: dict, samples: Samples) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    try:
        await loop.create_connection(lambda: _Client(maker, start, end, lat, tally, samples, done), "127.0.0.1", port)
    except OSError as e:
        _error(tally, type(e).__name__)
        return
    await done


def _client_process(port: int, devices: list, go, warmup: float, duration: float, out,
                    keys: list[bytes] | None = None) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    # Started, imported: say so, and wait for the common start time (however long the
    # machine took to start every client process, none of the run is spent starting).
    out.put("ready")
    start_wall = go.get()

    async def main() -> None:
        # Convert the shared wall-clock start to this process's perf_counter.
        offset = time.perf_counter() - time.time()
        start = start_wall + warmup + offset
        end = start_wall + warmup + duration + offset
        lat = array.array("d")
        tally = {"ok": 0, "refused": 0, "errors": 0}
        samples = Samples(keys)
        makers = [RequestMaker(d, bytes.fromhex(k), port) for d, k in devices]
        delay = start_wall - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        cpu: list[float] = []

        async def measure_cpu() -> None:
            # This process's own CPU over the measured window (it shares the cores with the server).
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            cpu.append(time.process_time())
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            cpu.append(time.process_time())

        await asyncio.gather(measure_cpu(), *(_connection(port, m, start, end, lat, tally, samples) for m in makers))
        out.put({"tally": tally, "lat": lat.tobytes(), "samples": samples.result(), "cpu_s": cpu[1] - cpu[0]})

    runner(main())


def thread_cpu(pid: int) -> dict[int, float] | None:
    """CPU seconds (user + system) used so far by each thread of process ``pid`` (Linux /proc), or None."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def server_pids(pid: int) -> list[int]:
    """The processes serving: ``pid`` itself, or its children when it supervises worker processes."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    workers = []
    for child in children:  # not multiprocessing's resource tracker
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"resource_tracker" not in f.read():
                    workers.append(child)
        except OSError:
            pass
    return workers or [pid]


def _cpu_split(before: dict, after: dict, pids: list[int], seconds: float, requests: int) -> dict:
    """The servers' CPU over the measured window, per answered request: event-loop threads and the rest.

    With several processes, loop_busy is the mean over their event loops.
    """
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = sum(used.get(pid, 0.0) for pid in pids)  # each main thread (tid == pid) runs an event loop
    rest = sum(v for tid, v in used.items() if tid not in pids)
    per = 1e6 / requests if requests else 0.0
    return {"loop_cpu_us": round(main * per, 1), "other_threads_cpu_us": round(rest * per, 1),
            "loop_busy": round(main / seconds / len(pids), 3)}


def drive(port: int, devices: list[tuple[str, str]], duration: float, clients: int,
          warmup: float = WARMUP_S, server_pid: int | None = None, keys: list[bytes] | None = None) -> dict:
    """Run the load against 127.0.0.1:port; one connection per device, spread over ``clients`` processes.

    With ``server_pid``, also the server's CPU per request over the measured
    window (from /proc, sampled at its start and end). With ``keys`` (the
    issuer's public keys), sampled tokens are verified as they arrive.
    """
    ctx = multiprocessing.get_context("spawn")
    out, go = ctx.Queue(), ctx.Queue()
    share = [devices[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=_client_process, args=(port, s, go, warmup, duration, out, keys)) for s in share]
    for p in procs:
        p.start()
    for _ in procs:
        if out.get(timeout=120) != "ready":  # generous: only a client that hangs while starting takes this long
            raise RuntimeError("a load-generator process did not start")
    start_wall = time.time() + 0.2  # time for each to read it
    for _ in procs:
        go.put(start_wall)
    cpu: dict | None = None
    pids = server_pids(server_pid) if server_pid is not None else []
    if pids:
        def sample() -> dict | None:
            merged: dict = {}
            for pid in pids:
                threads = thread_cpu(pid)
                if threads is None:
                    return None
                merged.update(threads)
            return merged

        time.sleep(max(0.0, start_wall + warmup - time.time()))
        before = sample()
        time.sleep(max(0.0, start_wall + warmup + duration - time.time()))
        after = sample()
        cpu = {"before": before, "after": after} if before and after else None
    results = [out.get(timeout=warmup + duration + 60) for _ in procs]
    for p in procs:
        p.join()
    lat = array.array("d")
    tally = {"ok": 0, "refused": 0, "errors": 0}
    kinds: dict = {}
    samples = _merge_samples(r["samples"] for r in results)
    for r in results:
        lat.frombytes(r["lat"])
        for k in tally:
            tally[k] += r["tally"][k]
        for k, v in r["tally"].get("error_kinds", {}).items():
            _count(kinds, k, v)
    result = {"per_s": round(tally["ok"] / duration, 1), "lat": lat, "ok": tally["ok"], "refused": tally["refused"],
              "errors": tally["errors"], "error_kinds": kinds, "samples": samples}
    answers = tally["ok"] + tally["refused"]
    if cpu is not None and server_pid is not None:
        result["cpu"] = _cpu_split(cpu["before"], cpu["after"], pids, duration, answers)
    if answers:
        result.setdefault("cpu", {})["client_cpu_us"] = round(sum(r["cpu_s"] for r in results) * 1e6 / answers, 1)
    return result


# -- the phases -----------------------------------------------------------------------


def _enroll(data: Path, n: int) -> list[tuple[str, str]]:
    from ...issuer.datadir import DataDir
    from ...issuer.keystore import load_or_create_master
    from ...issuer.protocol import derive_device_key
    from ...issuer.registry import Registry

    d = DataDir(data).create()
    master = load_or_create_master(d.root)
    registry = Registry(d.registry)
    devices = []
    with registry.conn:
        for i in range(n):
            device = f"bench-{i:04d}"
            registry.conn.execute("INSERT OR IGNORE INTO devices (id, grp, added) VALUES (?, ?, ?)",
                                  (device, BENCH_GROUP, time.time()))
            devices.append((device, derive_device_key(master, device).hex()))
    registry.close()
    return devices


def serve_bare() -> tuple[subprocess.Popen, int]:
    """The bare endpoint in its own process, on a free port: (process, port)."""
    return spawn_server([sys.executable, "-m", "crumb.tooling.bench.issuer", "bare"])


def _merge_samples(parts) -> dict:
    """Samples.result() of several processes (or rounds) as one."""
    merged: dict = {"verified": 0, "failures": {}, "codes": {}, "example": None}
    for part in parts:
        merged["verified"] += part["verified"]
        for key in ("failures", "codes"):
            for code, n in part[key].items():
                _count(merged[key], code, n)
        if merged["example"] is None:
            merged["example"] = part["example"]
    return merged


def issuer_keys(port: int) -> list[bytes]:
    """The raw public keys the issuer at 127.0.0.1:port publishes (GET /keys), for verifying its tokens."""
    import httpx

    from ...keys import unb64u

    try:
        r = httpx.get(f"http://127.0.0.1:{port}/keys", timeout=30)
        r.raise_for_status()
        return [unb64u(k["x"]) for k in r.json()["keys"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"cannot read the issuer's keys from http://127.0.0.1:{port}/keys: {e}") from None


def _merge(runs: list[dict]) -> dict:
    """Median throughput over rounds; latency percentiles over all rounds' samples pooled."""
    lat = sorted(x for r in runs for x in r["lat"])

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else None

    kinds: dict = {}
    for r in runs:
        for k, v in r["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    cpu = [r["cpu"] for r in runs if "cpu" in r]
    merged_cpu = {k: round(statistics.median(c[k] for c in cpu), 3 if k == "loop_busy" else 1)
                  for k in cpu[0]} if cpu else None
    return {"per_s": round(statistics.median(r["per_s"] for r in runs), 1), "cpu": merged_cpu,
            "rounds_per_s": [r["per_s"] for r in runs], "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "refused": sum(r["refused"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "error_kinds": kinds, "samples": _merge_samples(r["samples"] for r in runs)}


def run(*, url: str | None = None, processes: int = 1, redis_url: str | None = None, duration: float = 3.0,
        rounds: int = 3, connections: int = 64, clients: int = 1, data_dir: str | None = None,
        progress: Callable[[str], None] | None = None, ttl: int = TTL) -> dict:
    """Measure every target in ``rounds`` rounds, back to back within each round.

    All servers start first and idle while another is measured; each round
    then drives bare, issuer and (with processes > 1) the multi-process
    issuer in turn. On a shared 2-core machine noise comes and goes: the
    ratio to bare is taken within each round, and the medians are reported.
    """
    say = progress or (lambda m: None)
    tmp = Path(tempfile.mkdtemp(prefix="crumb-bench-"))
    from ..localissuer import LocalIssuer
    from ..localservices import RedisServer

    procs: list[subprocess.Popen] = []
    issuers: list[LocalIssuer] = []
    redis: RedisServer | None = None
    try:
        data = Path(data_dir) if (url and data_dir) else tmp / "data"
        policy = tmp / "policy.toml"
        policy.write_text(bench_policy(ttl))
        devices = _enroll(data, connections)
        maker = RequestMaker(devices[0][0], bytes.fromhex(devices[0][1]), 0)
        request_bytes = len(maker.body(int(time.time())))

        targets: dict[str, int] = {}
        pids: dict[str, int] = {}  # servers whose threads the bench can see: one process each
        proc, targets["bare"] = serve_bare()
        procs.append(proc)
        pids["bare"] = proc.pid
        if url:
            from urllib.parse import urlparse
            target = urlparse(url)
            if target.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise RuntimeError("the bench drives loopback addresses only")
            targets["issuer"] = target.port or 80
        else:
            issuers.append(LocalIssuer(data, policy).start())
            targets["issuer"] = issuers[-1].port
            pids["issuer"] = issuers[-1].proc.pid  # `crumb issuer serve` with one process serves in itself
            if processes > 1:
                if redis_url is None:
                    redis = RedisServer()
                    redis.start()
                    redis_url = redis.url
                issuers.append(LocalIssuer(data, policy, redis_url=redis_url, processes=processes).start())
                targets["multi"] = issuers[-1].port
                pids["multi"] = issuers[-1].proc.pid  # the supervisor: its children serve

        keys = {name: issuer_keys(port) for name, port in targets.items() if name != "bare"}
        measured: dict[str, list[dict]] = {name: [] for name in targets}
        for k in range(rounds):
            for name, port in targets.items():
                say(f"round {k + 1}/{rounds}: {name} ({connections} connections, {clients} client process(es), "
                    f"{duration}s)")
                measured[name].append(drive(port, devices, duration, clients, server_pid=pids.get(name),
                                            keys=keys.get(name)))

        def ratios(name: str, to: str) -> list[float]:
            # within each round: adjacent in time, so sharing its noise
            return [round(a["per_s"] / b["per_s"], 3) for a, b in zip(measured[name], measured[to]) if b["per_s"]]

        def ratio(name: str, to: str) -> float | None:
            pairs = ratios(name, to)
            return round(statistics.median(pairs), 3) if pairs else None

        merged = {name: _merge(runs) for name, runs in measured.items()}
        main_name = "multi" if "multi" in merged else "issuer"
        main_run, bare, one = merged[main_name], merged["bare"], merged["issuer"]
        token_sample = main_run["samples"]["example"]
        result = {
            "tokens_per_s": main_run["per_s"],
            "p50_ms": main_run["p50_ms"],
            "p99_ms": main_run["p99_ms"],
            "bare_per_s": bare["per_s"],
            "bare_p50_ms": bare["p50_ms"],
            "bare_p99_ms": bare["p99_ms"],
            "ratio_to_bare": ratio(main_name, "bare"),
            # The spread matters: on a small machine bare itself moves by tens of percent between runs.
            "rounds_ratio_to_bare": ratios(main_name, "bare"),
            "refused": main_run["refused"],
            "errors": main_run["errors"] + bare["errors"],
            "refusal_codes": main_run["samples"]["codes"],
            "error_kinds": {**bare["error_kinds"], **main_run["error_kinds"]},
            "verified_tokens": main_run["samples"]["verified"],
            # Sampled tokens that did not verify, by code: none, or the issuer sent something wrong.
            "verification_failures": main_run["samples"]["failures"],
            "token_ttl_s": None if url else ttl,
            "processes": processes,
            "store": "redis" if main_name == "multi" else "memory",
            "rounds": rounds,
            "rounds_tokens_per_s": main_run["rounds_per_s"],
            "rounds_bare_per_s": bare["rounds_per_s"],
            "connections": connections,
            "client_processes": clients,
            "duration_s": duration,
            "request_bytes": request_bytes,
            "response_bytes": len(token_sample) if token_sample else None,
            "cpus": os.cpu_count(),
        }
        result.update(_audit_writer(url))
        # The load generator's own CPU per answer: it runs on the same cores as the servers.
        result["client_cpu_per_answer_us"] = {name: run["cpu"]["client_cpu_us"] for name, run in merged.items()
                                              if run.get("cpu") and "client_cpu_us" in run["cpu"]}
        if one.get("cpu") and bare.get("cpu") and "loop_cpu_us" in one["cpu"] and "loop_cpu_us" in bare["cpu"]:
            # Where the ratio comes from: CPU per answer on each server's event-loop thread
            # (the one that must do all the Python), and on the issuer's other threads.
            result["cpu_per_answer_us"] = {
                "issuer_loop": one["cpu"]["loop_cpu_us"], "issuer_other_threads": one["cpu"]["other_threads_cpu_us"],
                "bare_loop": bare["cpu"]["loop_cpu_us"]}
            result["loop_busy"] = {"issuer": one["cpu"]["loop_busy"], "bare": bare["cpu"]["loop_busy"]}
        if main_name == "multi" and main_run.get("cpu") and "loop_cpu_us" in main_run["cpu"]:
            result["cpu_per_answer_us"]["multi_loops"] = main_run["cpu"]["loop_cpu_us"]
            result["cpu_per_answer_us"]["multi_other_threads"] = main_run["cpu"]["other_threads_cpu_us"]
            result["loop_busy"]["multi"] = main_run["cpu"]["loop_busy"]
        if main_name == "multi":
            result["single_process"] = {"tokens_per_s": one["per_s"], "p50_ms": one["p50_ms"],
                                        "p99_ms": one["p99_ms"], "refused": one["refused"], "errors": one["errors"],
                                        "rounds_tokens_per_s": one["rounds_per_s"]}
            result["ratio_to_bare_single"] = ratio("issuer", "bare")
            result["speedup_vs_single"] = ratio("multi", "issuer")
        return result
    finally:
        for p in procs:
            _stop(p)
        for issuer in issuers:
            issuer.close()
        if redis is not None:
            redis.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _audit_writer(url: str | None) -> dict:
    """Which audit writer the measured issuers run: {"native": bool or None, "audit_writer": text}.

    The issuers the bench starts are `crumb issuer serve` in child processes
    of this interpreter, with this install and this environment (CRUMB_NATIVE
    included), so crumb.issuer._native decides for them as it does here. An
    issuer given with --url was started by someone else: its own start-up
    line says.
    """
    if url:
        return {"native": None, "audit_writer": f"unknown: the issuer at {url} says in its start-up lines"}
    from ...issuer import _native

    return {"native": _native.NATIVE, "audit_writer": _native.describe()}


def render(r: dict) -> str:
    lines = [
        f"audit writer: {r['audit_writer']}",
        (f"issuer ({r['processes']} process{'es' if r['processes'] > 1 else ''}, {r['store']} store): "
        f"{r['tokens_per_s']:,.0f} tokens/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"),
        (f"bare ASGI endpoint, same server:  {r['bare_per_s']:,.0f} req/s  p50 {r['bare_p50_ms']} ms  "
        f"p99 {r['bare_p99_ms']} ms"),
        f"issuer / bare (median of per-round ratios): {r['ratio_to_bare']:.0%}"
        + (f" (rounds: {', '.join(f'{x:.0%}' for x in r['rounds_ratio_to_bare'])})"
           if r.get("rounds_ratio_to_bare") else "")
        + (f"  (single process: {r['ratio_to_bare_single']:.0%})" if "ratio_to_bare_single" in r else ""),
    ]
    if "single_process" in r:
        one = r["single_process"]
        lines.append(f"single process (memory store):   {one['tokens_per_s']:,.0f} tokens/s  "
                     f"p50 {one['p50_ms']} ms  p99 {one['p99_ms']} ms  -> x{r['speedup_vs_single']} with "
                     f"{r['processes']} processes")
    lines.append("per round: issuer " + " ".join(f"{x:,.0f}" for x in r["rounds_tokens_per_s"])
                 + "  bare " + " ".join(f"{x:,.0f}" for x in r["rounds_bare_per_s"]))
    if "cpu_per_answer_us" in r:
        c, busy = r["cpu_per_answer_us"], r["loop_busy"]
        lines.append(f"CPU per answer: issuer event loop {c['issuer_loop']:.0f} µs (busy {busy['issuer']:.0%}) + "
                     f"{c['issuer_other_threads']:.0f} µs on its other threads (signing, audit); bare event loop "
                     f"{c['bare_loop']:.0f} µs (busy {busy['bare']:.0%})")
        if "multi_loops" in c:
            lines.append(f"CPU per answer with {r['processes']} processes: event loops {c['multi_loops']:.0f} µs "
                         f"(each busy {busy['multi']:.0%}) + {c['multi_other_threads']:.0f} µs on other threads")
    if r.get("client_cpu_per_answer_us"):
        lines.append("load generator CPU per answer (same cores): "
                     + "  ".join(f"{k} {v:.0f} µs" for k, v in r["client_cpu_per_answer_us"].items()))
    lines.append(f"refused {r['refused']}  errors {r['errors']}  verified sample tokens {r['verified_tokens']}  "
                 f"request {r['request_bytes']} B  response {r['response_bytes']} B")
    if r.get("verification_failures"):
        lines.append("SAMPLED TOKENS THAT DID NOT VERIFY: "
                     + ", ".join(f"{code} {n}" for code, n in sorted(r["verification_failures"].items())))
    lines.append(f"{r['connections']} connections (one device each), {r['client_processes']} client process(es), "
                 f"{r['rounds']} rounds of {r['duration_s']}s per target, {r['cpus']} CPUs; medians of rounds")
    return "\n".join(lines)


if __name__ == "__main__":
    # `python -m crumb.tooling.bench.issuer bare [PORT]`: the baseline server, served like the issuer;
    # PORT 0 (the default) is any free port, and "listening PORT" says which.
    if len(sys.argv) in (2, 3) and sys.argv[1] == "bare":
        from ...issuer.server import serve

        serve(bare_factory, "127.0.0.1", int(sys.argv[2]) if len(sys.argv) == 3 else 0, ready=report_port)
    else:
        print("usage: python -m crumb.tooling.bench.issuer bare [PORT]   (the bench itself is `crumb bench issuer`)",
              file=sys.stderr)
        sys.exit(2)


# -- crumb bench issuer ---------------------------------------------------------------


def _command():
    import json

    import click

    from ...extras import require
    from ...issuer.datadir import DEFAULT_DATA, ENV_DATA

    @click.command("issuer")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option("--url", help="Drive a running issuer instead of starting one (needs --data of that issuer "
                                "for device keys, and a policy allowing the bench scope).")
    @click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 16),
                  help="Issuer processes; more than 1 shares a Redis (started by the bench unless --redis).")
    @click.option("--redis", "redis_url", metavar="URL", help="Redis for the multi-process run.")
    @click.option("--duration", default=3.0, show_default=True, type=click.FloatRange(0.5, 120),
                  help="Seconds of measured load per target and round.")
    @click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
                  help="Rounds; each measures every target back to back (medians are reported).")
    @click.option("--connections", default=64, show_default=True, type=click.IntRange(1, 1024),
                  help="Concurrent keep-alive connections, each a distinct device.")
    @click.option("--clients", default=1, show_default=True, type=click.IntRange(1, 16),
                  help="Load-generator processes.")
    @click.option("--data", "data_dir", envvar=ENV_DATA, default=DEFAULT_DATA, show_default=True,
                  type=click.Path(file_okay=False), help=f"With --url: that issuer's data directory (or ${ENV_DATA}).")
    @click.option("--ttl", default=TTL, show_default=True, type=click.IntRange(1, 86400),
                  help="Lifetime of the tokens the bench's issuers mint, seconds (not with --url).")
    def issuer(as_json, url, processes, redis_url, duration, rounds, connections, clients, data_dir, ttl) -> None:
        """Tokens/s and latency of the issuer against a bare ASGI endpoint served the same way."""
        require("tools", "crumb bench issuer")
        try:
            result = run(url=url, processes=processes, redis_url=redis_url, duration=duration, rounds=rounds,
                         connections=connections, clients=clients, data_dir=data_dir if url else None,
                         progress=None if as_json else (lambda m: click.echo(m, err=True)), ttl=ttl)
        except Exception as e:  # noqa: BLE001 -- a bench ends with what went wrong, in one line, never a traceback
            click.echo(f"error: crumb bench issuer: {type(e).__name__}: {e}", err=True)
            sys.exit(2)
        click.echo(json.dumps(result, indent=1) if as_json else render(result))
        if result["verification_failures"]:
            sys.exit(1)  # the issuer answered 200 with something that is not a valid token

    return issuer


command = _command()
