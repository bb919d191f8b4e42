"""On-device verification figures for `crumb bench device` (ucrumb.verify, issue 18).

Measured inside the MicroPython WebAssembly VM on the device code compiled by
mpy-cross, as a board loads it:

device_verify_ms
    Median of ``VERIFY_RUNS`` samples, each the mean of ``VERIFY_PER``
    ``Verifier.verify()`` calls (the VM's ``time.ticks_us`` moves in whole ms), on a
    typical actuator command token (one signature: an authority block for
    ``/valves/1`` ``set``, audience the device), each on a fresh verifier.
device_verify_chain_ms
    The same for a token that passed two declared hops (three signatures).
device_verify_alloc_bytes
    Heap allocated by one verify with the automatic GC off (``gc.mem_alloc()``
    difference): every big-int intermediate counted, garbage included, so an
    upper bound of the peak; the VM cannot collect mid-run.
device_verify_min_heap_bytes
    The smallest heap (1 KB steps) in which importing ucrumb.verify from .mpy
    and one verify of the typical token complete on the MicroPython unix port
    (``-X heapsize``: a heap that does not grow and is collected as on a board).
    It includes the modules' code loaded into RAM; the port is 64-bit, so a
    32-bit board needs less.
vm_pystones_per_s
    MicroPython's own pystone (tests/perf_bench/misc_pystone.py, kept by
    tools/mpy/unixport.sh from its pinned sources, or ``$CRUMB_PYSTONE``), median
    of ``PYSTONE_RUNS``, in the same VM and run: the baseline of the board
    estimates ``estimate_<board>_verify_ms`` = device_verify_ms x vm_pystones /
    the board's published pystones (BOARDS, sources in docs/device.md).
    Estimates, not measurements.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

VERIFY_RUNS = 9  # samples, each the mean of VERIFY_PER verifies (the VM's ticks_us moves in ms)
VERIFY_PER = 5
PYSTONE_RUNS = 5
PYSTONE_LOOPS = 4000  # misc_pystone's (1000, 10) parameters
NOW = 1_800_000_000
DEVICE = "valve-1"

#: Published pystone figures (pystones/s, Pystone 1.2 on MicroPython) and where from;
#: docs/device.md gives the sources and the assumptions of each.
BOARDS: dict[str, dict[str, Any]] = {
    "esp32": {"pystones_per_s": 1661.0,
              "source": "ESP32 @ 240 MHz, MicroPython 1.12, pystone_lowmem: micropython/micropython#5673"},
    "rp2040": {"pystones_per_s": round(1661.0 * 160 / 240 * 15.4 / 19.8, 1),
               "source": "derived: the ESP32 figure scaled to 160 MHz, times ESP32 @ 160 MHz / RP2040 @ 125 MHz "
                         "(15.4 s / 19.8 s) on one program run on both boards (scruss.com, 2025)"},
}

_VM_VERIFY = """
import gc, sys, time
from binascii import unhexlify
from ucrumb.verify import Verifier
issuer = unhexlify(sys.argv[1])
nodes = [unhexlify(sys.argv[2][i:i + 64]) for i in range(0, len(sys.argv[2]), 64)]
now = int(sys.argv[3])
runs = int(sys.argv[4])
per = int(sys.argv[5])
for name, tok in (("plain", sys.argv[6]), ("chain", sys.argv[7])):
    tok = unhexlify(tok)
    Verifier([issuer], "@DEVICE@", lambda: now, node_keys=nodes, fence=False).verify(tok, "/valves/1", "set")
    for i in range(runs):
        vs = [Verifier([issuer], "@DEVICE@", lambda: now, node_keys=nodes, fence=False) for _ in range(per)]
        t = time.ticks_us()
        for v in vs:
            v.verify(tok, "/valves/1", "set")
        print("@@VERIFY", name, time.ticks_diff(time.ticks_us(), t) / per)
v = Verifier([issuer], "@DEVICE@", lambda: now, node_keys=nodes, fence=False)
tok = unhexlify(sys.argv[6])
gc.collect()
gc.disable()
a = gc.mem_alloc()
v.verify(tok, "/valves/1", "set")
b = gc.mem_alloc()
gc.enable()
print("@@ALLOC", b - a)
""".replace("@DEVICE@", DEVICE)

_VM_PYSTONE = """
import sys, time
import misc_pystone
run, result = misc_pystone.bm_setup((@LOOPS@,))
for _ in range(int(sys.argv[1])):
    t = time.ticks_us()
    run()
    print("@@PYSTONE", time.ticks_diff(time.ticks_us(), t))
""".replace("@LOOPS@", str(PYSTONE_LOOPS))

_UNIX_MIN_HEAP = """
import sys
from binascii import unhexlify
from ucrumb.verify import Verifier
with open(sys.argv[1]) as f:
    issuer, tok = f.read().split()
v = Verifier([unhexlify(issuer)], "@DEVICE@", lambda: @NOW@, fence=False)
v.verify(unhexlify(tok), "/valves/1", "set")
print("@@OK")
""".replace("@DEVICE@", DEVICE).replace("@NOW@", str(NOW))


def tokens() -> tuple[Any, bytes, bytes, list]:
    """(issuer key, a typical command token, a token through two declared hops, the hop keys)."""
    from ...keys import SigningKey
    from ...token import attest, mint

    issuer = SigningKey(b"\x01" * 32)
    hops = [("gateway", SigningKey(b"\x02" * 32)), ("ingest", SigningKey(b"\x03" * 32))]
    kw: dict[str, Any] = {"scope": [("/valves/1", "set")], "sub": "svc-ctl", "aud": DEVICE, "now": NOW - 2,
                          "ttl": 60}
    plain = mint(issuer, cti=b"\x00" * 7 + b"\x01", **kw)
    chain = mint(issuer, cti=b"\x00" * 7 + b"\x02", chain=[(n, k.public) for n, k in hops], hop_refs="kid", **kw)
    for name, key in hops:
        chain = attest(chain, key, name)
    return issuer, plain, chain, hops


def pystone_file() -> Path:
    """MicroPython's misc_pystone.py: $CRUMB_PYSTONE, or the copy tools/mpy/unixport.sh keeps."""
    from .device import repo_root

    env = os.environ.get("CRUMB_PYSTONE")
    path = Path(env) if env else repo_root() / "tools" / "mpy" / "unix-port" / "perf_bench" / "misc_pystone.py"
    if not path.is_file():
        raise RuntimeError(f"MicroPython's pystone is not at {path}: run bash tools/mpy/unixport.sh --force "
                           "(it keeps tests/perf_bench/misc_pystone.py from the sources it builds), or set "
                           "CRUMB_PYSTONE to that file")
    return path


def _marks(out: str, tag: str) -> list[list[str]]:
    return [line.split()[1:] for line in out.splitlines() if line.startswith(tag + " ")]


def min_heap(vm: Any, compiled: Path, issuer_hex: str, token_hex: str, work: Path) -> int:
    """The smallest -X heapsize (1 KB steps) in which import + one verify complete on the unix port."""
    script = work / "minheap.py"
    script.write_text(_UNIX_MIN_HEAP)
    data = work / "minheap.txt"
    data.write_text(f"{issuer_hex}\n{token_hex}\n")  # a file: the 1.25 unix port dies on a 200-byte argument

    def fits(kb: int) -> bool:
        r = vm.run_unix_port(script, [data], paths=[compiled], heap=kb * 1024, timeout=60)
        return r.rc == 0 and "@@OK" in r.out

    lo, hi = 8, 256
    if not fits(hi):
        raise RuntimeError("ucrumb.verify does not complete in a 256 KB heap on the unix port")
    while hi - lo > 1:  # invariant: lo fails, hi fits
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi * 1024


def run(vm: Any, say=lambda m: None) -> dict:
    """The figures above, as a dict for `crumb bench device --json`."""
    issuer, plain, chain, hops = tokens()
    say("measuring ucrumb.verify in MicroPython (and MicroPython's pystone, the baseline)")
    vm.check_unix_port()
    with tempfile.TemporaryDirectory(prefix="crumb-bench-verify-") as d:
        work = Path(d)
        compiled = work / "mpy"
        vm.compile_tree(vm.DEVICE_DIR, compiled)
        paths = [f"{compiled}:/lib", f"{vm.VMLIB_DIR}:/lib"]
        nodes = "".join(k.public.raw.hex() for _, k in hops)
        r = vm.run_vm(_VM_VERIFY, args=[issuer.public.raw.hex(), nodes, NOW, VERIFY_RUNS, VERIFY_PER, plain.hex(),
                                        chain.hex()],
                      paths=paths, default_paths=False, timeout=300).check()
        times: dict[str, list[float]] = {"plain": [], "chain": []}
        for name, us in _marks(r.out, "@@VERIFY"):
            times[name].append(float(us))
        alloc = int(_marks(r.out, "@@ALLOC")[0][0])
        bench = work / "bench"
        bench.mkdir()
        (bench / "misc_pystone.py").write_bytes(pystone_file().read_bytes())
        p = vm.run_vm(_VM_PYSTONE, args=[PYSTONE_RUNS], paths=[f"{bench}:/lib"], timeout=300).check()
        pystone_us = statistics.median(int(x[0]) for x in _marks(p.out, "@@PYSTONE"))
        heap = min_heap(vm, compiled, issuer.public.raw.hex(), plain.hex(), work)
    if len(times["plain"]) != VERIFY_RUNS or len(times["chain"]) != VERIFY_RUNS:
        raise RuntimeError(f"the VM did not report every verify:\n{r.out}\n{r.err}")
    verify_ms = statistics.median(times["plain"]) / 1000
    vm_pystones = PYSTONE_LOOPS / (pystone_us / 1e6)
    out: dict[str, Any] = {
        "device_verify_ms": round(verify_ms, 2),
        "device_verify_chain_ms": round(statistics.median(times["chain"]) / 1000, 2),
        "device_verify_alloc_bytes": alloc,
        "device_verify_min_heap_bytes": heap,
        "device_verify_token_bytes": len(plain),
        "vm_pystones_per_s": round(vm_pystones),
        "device_verify_pystones": round(verify_ms * vm_pystones / 1000, 1),
        "board_pystones": {k: v["pystones_per_s"] for k, v in BOARDS.items()},
    }
    for board, info in BOARDS.items():
        # the verify's cost in pystones, at the board's published pystone rate: an estimate
        out[f"estimate_{board}_verify_ms"] = round(verify_ms * vm_pystones / info["pystones_per_s"])
    return out
