"""Cost of ucrumb.aesccm in the MicroPython VM (the pure-Python AES path: the
WebAssembly port has no cryptolib), against HMAC-SHA256 (ucrumb.mac, which
runs on the port's C sha256) over the same 64 bytes in the same run.

    PYTHONPATH=host:device .venv/bin/python tools/mpy/aesccm_bench.py [--json] [--runs N]

Prints the .mpy size of the module, the median time of one AES-CCM-16-64-128
encrypt of 64 bytes (13-byte nonce, 16 bytes of associated data), that time as
a ratio to one HMAC-SHA256 of 64 bytes, and the heap one encrypt allocates
(gc.mem_alloc with the GC off, after a warm-up call). Where the unix port is
built (tools/mpy/unixport.sh) it also times the cryptolib path there against
the pure path of the same module in the same process. Times depend on the host
running Node.js; the ratio and the heap are the portable figures.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import mpyvm

SETUP = (
    "from ucrumb.aesccm import ccm_encrypt, backend\n"
    "from ucrumb.mac import hmac_sha256\n"
    "key = bytes(range(16)); nonce = bytes(13); aad = bytes(16); msg = bytes(range(64))\n"
)

TIMING = SETUP + """
import time
ccm_encrypt(key, nonce, msg, aad)
print("@@BACKEND", backend())
for _ in range(%d):
    t0 = time.ticks_us()
    for _ in range(%d):
        ccm_encrypt(key, nonce, msg, aad)
    t1 = time.ticks_us()
    for _ in range(%d):
        hmac_sha256(key, msg)
    t2 = time.ticks_us()
    print("@@T", time.ticks_diff(t1, t0), time.ticks_diff(t2, t1))
"""

# On the unix port (real cryptolib): the cryptolib path against the pure AES
# path of the same module in the same process (the module's _aes set to None).
UNIX = SETUP + """
import time
from ucrumb import aesccm
print("@@BACKEND", backend())
real = aesccm._aes
for _ in range(%d):
    t0 = time.ticks_us()
    for _ in range(%d):
        ccm_encrypt(key, nonce, msg, aad)
    t1 = time.ticks_us()
    aesccm._aes = None
    for _ in range(%d):
        ccm_encrypt(key, nonce, msg, aad)
    aesccm._aes = real
    t2 = time.ticks_us()
    print("@@T", time.ticks_diff(t1, t0), time.ticks_diff(t2, t1))
"""


def _pairs(out: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in line.split()[1:]) for line in out.splitlines() if line.startswith("@@T ")]


def unix_port(runs: int, reps: int) -> dict:
    """The cryptolib and pure paths on the real unix port, if it is built."""
    import tempfile

    try:
        mpyvm.check_unix_port()
    except mpyvm.VMUnavailable:
        return {}
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "bench.py"
        f.write_text(UNIX % (runs, reps, reps))
        r = mpyvm.run_unix_port(f, paths=[mpyvm.DEVICE_DIR], timeout=300).check()
    backend = re.search(r"^@@BACKEND (\w+)$", r.out, re.MULTILINE)
    pairs = _pairs(r.out)
    lib = statistics.median(p[0] for p in pairs) / reps / 1000
    pure = statistics.median(p[1] for p in pairs) / reps / 1000
    return {"unix_backend": backend.group(1) if backend else None, "unix_ccm64_ms": round(lib, 4),
            "unix_pure_ccm64_ms": round(pure, 4), "unix_pure_to_cryptolib_ratio": round(pure / lib, 1)}


def run(runs: int = 7, reps: int = 20) -> dict:
    sizes, _ = mpyvm.mpy_sizes()
    r = mpyvm.run_vm(TIMING % (runs, reps, 10 * reps), timeout=300).check()
    backend = re.search(r"^@@BACKEND (\w+)$", r.out, re.MULTILINE)
    pairs = _pairs(r.out)
    ccm_ms = statistics.median(p[0] for p in pairs) / reps / 1000
    mac_ms = statistics.median(p[1] for p in pairs) / (10 * reps) / 1000  # 10x the calls: it is fast
    heap = mpyvm.heap_peak("ccm_encrypt(key, nonce, msg, aad)", setup=SETUP, warmup=True)
    return {
        "backend": backend.group(1) if backend else None,
        "aesccm_mpy_bytes": sizes.get("ucrumb/aesccm.mpy"),
        "ccm64_ms": round(ccm_ms, 3),
        "hmac64_ms": round(mac_ms, 3),
        "ccm64_to_hmac64_ratio": round(ccm_ms / mac_ms, 1),
        "ccm64_heap_bytes": heap,
        **unix_port(runs, reps),
        "runs": runs,
        "reps_per_run": reps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    r = run(a.runs)
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:24s} {v}")


if __name__ == "__main__":
    main()
