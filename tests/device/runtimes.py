"""Run a module of network cases (tests/device/netcases) on a MicroPython runtime.

``vm``: the official WebAssembly port under Node.js, its sockets (and TLS)
bridged to the host (tools/mpy). ``unix``: a real MicroPython, the unix port
built with mbedTLS by tools/mpy/unixport.sh, with the device code as ``.py``
sources; ``unix-mpy``: the same with the device code compiled by mpy-cross.
Each returns {"module.case": (status, detail)} from tests/device/vm_harness.py
and fails the test (never skips) when the runtime cannot run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNTIMES = ("vm", "unix", "unix-mpy")


def run(vm, runtime: str, module: str, arg: str, tmp_path_factory, extra_paths=(), timeout: float = 180) -> dict:
    """Run the cases of ``module`` (setup(arg) first) on ``runtime``; results by case."""
    from test_device_cases import _parse

    harness = HERE / "vm_harness.py"
    spec = f"{module}={arg}"
    if runtime == "vm":
        paths = [f"{HERE / 'cases'}:/lib/cases", f"{HERE / 'netcases'}:/lib/netcases", *extra_paths]
        r = vm.run_vm(file=harness, args=[spec], paths=paths, timeout=timeout)
    else:
        try:
            vm.check_unix_port()
        except vm.VMUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        device = REPO / "device"
        if runtime == "unix-mpy":
            device = tmp_path_factory.mktemp("mpy")
            vm.compile_tree(REPO / "device", device)
        r = vm.run_unix_port(harness, [spec], paths=[device, HERE], timeout=timeout)
    results, done = _parse(r.out)
    assert done and r.rc == 0, f"{runtime}: exit {r.rc}\n{r.out[-3000:]}\n{r.err[-3000:]}"
    return results


def check(results: dict, key: str, runtime: str) -> None:
    from test_device_cases import _with_source

    if key not in results:
        pytest.fail(f"{key} did not report on {runtime}", pytrace=False)
    status, detail = results[key]
    if status != "OK":
        pytest.fail(f"failed on MicroPython ({runtime}):\n{_with_source(detail)}", pytrace=False)


def results(vm, tmp_path_factory, module: str, arg_for, extra_paths=()):
    """A function runtime -> results of ``module``'s cases there, each runtime run
    once; ``arg_for(runtime)`` is the argument of the module's setup()."""
    cache: dict = {}

    def get(runtime):
        if runtime not in cache:
            cache[runtime] = run(vm, runtime, module, arg_for(runtime), tmp_path_factory, extra_paths)
        return cache[runtime]

    return get


def case_tests(module: str, cases):
    """The test function reporting every case of ``module`` on every runtime, from
    the ``results`` fixture of the test module (built with results() above)."""
    @pytest.mark.parametrize("case", cases)
    @pytest.mark.parametrize("runtime", RUNTIMES)
    def test_micropython(runtime, case, results):
        check(results(runtime), f"{module}.{case}", runtime)

    return test_micropython
