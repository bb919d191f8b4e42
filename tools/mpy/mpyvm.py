"""Python side of crumb's MicroPython tooling (CPython only).

* ``run_vm``: run code or a file inside the MicroPython WebAssembly VM
  (tools/mpy/run.mjs under Node.js) and collect rc/stdout/stderr.
* ``heap_peak``: bytes of MicroPython heap a snippet allocates (GC off).
* ``compile_tree`` / ``mpy_sizes``: compile every .py under device/ with
  mpy-cross and report the .mpy sizes (the device footprint figure).

Nothing here skips: a missing Node.js, npm package or mpy-cross raises
``VMUnavailable`` / ``MpyCrossError`` with a message saying how to fix it.
Used by tests/device and, later, by the benchmarks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# One compiler front end for the whole project (crumb firmware build, the benches, the tests).
from crumb.tooling.firmware.mpycross import MpyCrossError, compile_tree, mpy_cross_exe  # noqa: F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEVICE_DIR = REPO / "device"
VMLIB_DIR = HERE / "vmlib"
RUNNER = HERE / "run.mjs"
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
PKG_MJS = HERE / "node_modules" / NPM_PACKAGE / "micropython.mjs"
SETUP_HINT = "run: bash tools/setup_test_env.sh"
DEFAULT_HEAP = 256 * 1024


class VMUnavailable(RuntimeError):
    """The MicroPython VM cannot run here (Node.js or the npm port missing)."""


@dataclass
class VMResult:
    rc: int
    out: str
    err: str

    def check(self) -> VMResult:
        if self.rc != 0:
            raise AssertionError(
                f"MicroPython VM exited with {self.rc}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"
            )
        return self


def node_path() -> str:
    node = shutil.which("node")
    if not node:
        raise VMUnavailable(f"Node.js ('node') not found on PATH; the MicroPython VM needs it ({SETUP_HINT})")
    return node


def check_vm() -> str:
    """Return the node executable, or raise VMUnavailable saying what is missing."""
    node = node_path()
    if not PKG_MJS.is_file():
        raise VMUnavailable(f"npm package {NPM_PACKAGE} is not installed in {HERE / 'node_modules'} ({SETUP_HINT})")
    return node


def run_vm(
    code: str | None = None,
    file: str | os.PathLike | None = None,
    args=(),
    *,
    heap: int = DEFAULT_HEAP,
    paths=(),
    default_paths: bool = True,
    net_max_timeout: float | None = None,
    timeout: float = 120,
) -> VMResult:
    """Run ``code`` (or ``file``) in a fresh MicroPython VM.

    ``paths`` are "HOSTDIR[:VMDIR]" strings copied into the VM (default VMDIR
    /lib). With ``default_paths`` device/ and tools/mpy/vmlib/ go to /lib.
    ``timeout`` bounds the whole run (the VM is killed after it).
    """
    if (code is None) == (file is None):
        raise ValueError("give exactly one of code= or file=")
    cmd = [check_vm(), str(RUNNER), "--heap", str(heap)]
    if not default_paths:
        cmd.append("--no-default-paths")
    for p in paths:
        cmd += ["--path", str(p)]
    if net_max_timeout is not None:
        cmd += ["--net-max-timeout", str(net_max_timeout)]
    cmd += ["-c", code] if code is not None else [str(file)]
    cmd += [str(a) for a in args]
    try:
        p = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = (e.stderr or b"").decode("utf-8", "replace")
        raise AssertionError(f"MicroPython VM did not finish within {timeout} s\n--- stdout ---\n{out}\n--- stderr ---\n{err}")
    return VMResult(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


# The real MicroPython unix port the suite runs the device code on: the build of
# tools/mpy/unixport.sh, or any other (a newer release, a 32-bit build) named by
# CRUMB_MICROPYTHON.
UNIX_PORT = Path(os.environ.get("CRUMB_MICROPYTHON") or HERE / "unix-port" / "micropython")


def check_unix_port() -> Path:
    """The real MicroPython unix port (tools/mpy/unixport.sh builds it), or VMUnavailable."""
    if not os.access(UNIX_PORT, os.X_OK):
        raise VMUnavailable(f"the MicroPython unix port is not built ({UNIX_PORT} missing; {SETUP_HINT})")
    return UNIX_PORT


def run_unix_port(file: str | os.PathLike, args=(), *, paths=(), timeout: float = 120,
                  heap: int | None = None) -> VMResult:
    """Run ``file`` on the real MicroPython unix port, with ``paths`` (host
    directories, in order) as its module path: real sockets, real mbedTLS.

    ``heap`` (bytes) bounds the GC heap (``-X heapsize``): unlike the
    WebAssembly VM's, this heap does not grow and is collected as on a board,
    so a run that needs more fails with MemoryError. The unix port is a 64-bit
    build: its objects are larger than on a 32-bit board, so a bound that holds
    here holds with room to spare on an ESP32 or an RP2040 for the same code.
    """
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(p) for p in paths] + [".frozen"]))
    cmd = [str(check_unix_port())]
    if heap is not None:
        cmd += ["-X", f"heapsize={int(heap)}"]
    cmd += [str(file), *[str(a) for a in args]]
    try:
        p = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace")
        err = (e.stderr or b"").decode("utf-8", "replace")
        raise AssertionError(f"MicroPython unix port did not finish within {timeout} s\n--- stdout ---\n{out}\n"
                             f"--- stderr ---\n{err}")
    return VMResult(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


_HEAP_RE = re.compile(r"^@@HEAP (\d+) (\d+)$", re.MULTILINE)


def heap_peak(snippet: str, setup: str = "", warmup: bool = False, **kw) -> int:
    """Bytes of MicroPython GC heap allocated while ``snippet`` runs.

    ``setup`` runs first (imports etc., not counted). The snippet becomes the
    body of a function (its variables are locals), compiled before the
    measurement starts; then ``gc.collect(); gc.disable()`` and the
    difference of ``gc.mem_alloc()`` after/before the call is reported, minus
    the same figure for an empty function (the call's own overhead).
    With the GC off nothing is freed, so this is the total allocated: an
    upper bound of (and for straight-line code equal to) the peak heap use.
    ``warmup`` calls the snippet once before measuring (so one-time costs such
    as a first import are excluded). Extra keyword arguments go to run_vm
    (heap=, paths=, ...).
    """
    body = "\n".join("    " + line for line in (snippet.strip("\n") or "pass").splitlines())
    code = (
        "import gc\n"
        + setup
        + "\ndef _crumb_measured():\n"
        + body
        + "\ndef _crumb_empty():\n    pass\n"
        "def _crumb_alloc(f):\n"
        "    gc.collect()\n"
        "    gc.disable()\n"
        "    a0 = gc.mem_alloc()\n"
        "    f()\n"
        "    a1 = gc.mem_alloc()\n"
        "    gc.enable()\n"
        "    return a1 - a0\n"
        + ("_crumb_measured()\n" if warmup else "")
        + "_b = _crumb_alloc(_crumb_empty)\n"
        "print('@@HEAP', _crumb_alloc(_crumb_measured) - _b, _b)\n"
    )
    r = run_vm(code, **kw).check()
    m = _HEAP_RE.search(r.out)
    if not m:
        raise AssertionError(f"no heap figure in VM output:\n{r.out}\n{r.err}")
    return int(m.group(1))


def mpy_sizes(src: Path = DEVICE_DIR, extra_args=()) -> tuple[dict[str, int], int]:
    """({module.mpy: bytes}, total bytes) for the device package."""
    with tempfile.TemporaryDirectory(prefix="crumb-mpy-") as d:
        sizes = compile_tree(src, Path(d), extra_args)
    return sizes, sum(sizes.values())


if __name__ == "__main__":  # pragma: no cover
    sizes, total = mpy_sizes()
    for k, v in sizes.items():
        print(f"{v:6d}  {k}")
    print(f"{total:6d}  total")
