#!/usr/bin/env python3
"""How fast could the issuer go if parts of its work were free? Two stripped issuers against the real one.

A diagnostic for docs/issuer.md §9, never a way to run an issuer. Next to
the real issuer and the bare endpoint of `crumb bench issuer`, it serves:

  unlogged   a real issuer whose issuances skip signing and the audit log
             (tokens get a zero signature and are not recorded): the ceiling
             for any work on signing or logging;
  handoff    an issuer that answers every request after the first with the
             first one's response, but still hands one real record and one
             token to the audit writer (signed, chained, committed) and waits
             for it: the ceiling for any work on the request path itself
             (parsing, MAC, admission, minting), since that work is free here.

and drives all of them the way the bench does, round after round, printing
each one's rate, ratio to bare (median of per-round ratios) and event-loop
CPU per answer.

    .venv/bin/python tools/issuer_ceiling.py [--rounds 3] [--duration 3] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serve_stripped(kind: str, data: str, policy: str) -> None:
    from crumb.issuer.app import IssuerApp, Settings, build_issuer
    from crumb.issuer.datadir import DataDir
    from crumb.issuer.server import serve
    from crumb.tooling.bench.issuer import report_port

    issuer = build_issuer(Settings(DataDir(Path(data)), Path(policy)))
    if kind == "unlogged":
        async def unsigned_unlogged(body: bytes, key, messages: list[bytes]) -> tuple[int, list[bytes]]:
            return 0, [bytes(64)] * len(messages)

        issuer.audit.append_signed = unsigned_unlogged
    else:  # handoff
        real_token = issuer.token
        first: list = []

        async def handoff_only(body, fmt, peer, refusal=None):
            if not first:  # a real answer, then its lane's record and token for every request after it
                answer = await real_token(body, fmt, peer, refusal)
                lane = next(iter(issuer._lanes.values()))
                now = int(time.time())
                _, to_sign, cti = lane.mint.prepare(now)
                first.append((answer, lane.key, lane.record.body_one(now * 1000, now + lane.ttl, peer, cti.hex()),
                              to_sign))
                return answer
            answer, key, record, to_sign = first[0]
            await issuer.audit.append_signed(record, key, [to_sign])
            return answer

        issuer.token = handoff_only
    serve(functools.partial(IssuerApp, issuer), "127.0.0.1", 0, ready=report_port)  # any free port, said


STRIPPED = {"unlogged": "issuer without signing or audit log", "handoff": "only the audit handoff on the loop"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from crumb.tooling.bench import issuer as bench
    from crumb.tooling.localissuer import LocalIssuer

    tmp = Path(tempfile.mkdtemp(prefix="crumb-ceiling-"))
    procs: list[subprocess.Popen] = []
    real = None
    try:
        policy = tmp / "policy.toml"
        policy.write_text(bench.BENCH_POLICY)
        devices = bench._enroll(tmp / "data", 64)
        ports, pids = {}, {}
        proc, ports["bare"] = bench.serve_bare()
        procs.append(proc)
        pids["bare"] = proc.pid
        for kind in STRIPPED:
            shutil.copytree(tmp / "data", tmp / kind)
            proc, ports[kind] = bench.spawn_server([sys.executable, __file__, "serve", kind, str(tmp / kind),
                                                    str(policy)])
            procs.append(proc)
            pids[kind] = proc.pid
        real = LocalIssuer(tmp / "data", policy).start()
        ports["issuer"] = real.port
        pids["issuer"] = real.proc.pid
        rates: dict[str, list[float]] = {name: [] for name in ports}
        loop_us: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(args.rounds):
            for name, port in ports.items():
                run = bench.drive(port, devices, args.duration, 1, server_pid=pids[name])
                rates[name].append(run["per_s"])
                if run.get("cpu", {}).get("loop_cpu_us") is not None:
                    loop_us[name].append(run["cpu"]["loop_cpu_us"])
        result = {name: {"per_s": rates[name],
                         "ratio_to_bare": round(statistics.median(
                             a / b for a, b in zip(rates[name], rates["bare"])), 3),
                         "loop_cpu_us": round(statistics.median(loop_us[name]), 1) if loop_us[name] else None}
                  for name in ("issuer", *STRIPPED)}
        result["bare_per_s"] = rates["bare"]
        result["bare_loop_cpu_us"] = round(statistics.median(loop_us["bare"]), 1) if loop_us["bare"] else None
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"{'bare endpoint:':38s}{statistics.median(rates['bare']):,.0f} req/s  "
                  f"event loop {result['bare_loop_cpu_us']} µs/answer")
            for name, label in (("issuer", "issuer"), *STRIPPED.items()):
                print(f"{label + ':':38s}{statistics.median(rates[name]):,.0f} tokens/s  "
                      f"{result[name]['ratio_to_bare']:.0%} of bare (median of per-round ratios)  "
                      f"event loop {result[name]['loop_cpu_us']} µs/answer")
    finally:
        if real is not None:
            real.close()
        for p in procs:
            bench._stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve_stripped(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
