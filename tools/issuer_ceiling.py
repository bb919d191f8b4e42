#!/usr/bin/env python3
"""How fast could the issuer's Python request path go if signing and the audit log were free?

A diagnostic for docs/issuer.md §9, never a way to run an issuer: it serves
a real issuer whose issuances skip signing and the audit log (tokens get a
zero signature and are not recorded), next to the real issuer and the bare
endpoint of `crumb bench issuer`, and drives all three the way the bench
does, round after round. The ratio of the stripped issuer to bare is the
ceiling for any work on signing or logging: beyond it, only a faster request
path helps.

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
from pathlib import Path


def serve_stripped(data: str, policy: str, port: int) -> None:
    from crumb.issuer.app import IssuerApp, Settings, build_issuer
    from crumb.issuer.datadir import DataDir
    from crumb.issuer.server import serve

    issuer = build_issuer(Settings(DataDir(Path(data)), Path(policy)))

    async def unsigned_unlogged(body: bytes, key, messages: list[bytes]) -> tuple[int, list[bytes]]:
        return 0, [bytes(64)] * len(messages)

    issuer.audit.append_signed = unsigned_unlogged
    serve(functools.partial(IssuerApp, issuer), "127.0.0.1", port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from crumb.bench import issuer as bench
    from crumb.issuer.local import LocalIssuer
    from crumb.localservices import free_port

    tmp = Path(tempfile.mkdtemp(prefix="crumb-ceiling-"))
    procs: list[subprocess.Popen] = []
    real = None
    try:
        policy = tmp / "policy.toml"
        policy.write_text(bench.BENCH_POLICY)
        devices = bench._enroll(tmp / "data", 64)
        shutil.copytree(tmp / "data", tmp / "stripped")
        ports = {"bare": free_port(), "stripped": free_port()}
        procs.append(bench._serve_bare(ports["bare"]))
        procs.append(subprocess.Popen([sys.executable, __file__, "serve", str(tmp / "stripped"), str(policy),
                                       str(ports["stripped"])]))
        bench.wait_for_port(ports["stripped"], procs[-1])
        real = LocalIssuer(tmp / "data", policy).start()
        ports["issuer"] = real.port
        rates: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(args.rounds):
            for name, port in ports.items():
                rates[name].append(bench.drive(port, devices, args.duration, 1)["per_s"])
        result = {name: {"per_s": rates[name],
                         "ratio_to_bare": round(statistics.median(
                             a / b for a, b in zip(rates[name], rates["bare"])), 3)}
                  for name in ("issuer", "stripped")}
        result["bare_per_s"] = rates["bare"]
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"bare endpoint:                        {statistics.median(rates['bare']):,.0f} req/s")
            for name, label in (("issuer", "issuer"), ("stripped", "issuer without signing or audit log")):
                print(f"{label + ':':38s}{statistics.median(rates[name]):,.0f} tokens/s  "
                      f"{result[name]['ratio_to_bare']:.0%} of bare (median of per-round ratios)")
    finally:
        if real is not None:
            real.close()
        for p in procs:
            bench._stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve_stripped(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
