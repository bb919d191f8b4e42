"""Run every case in tests/device/cases on CPython and in MicroPython.

Each case is reported separately per runtime:
  test_cpython[cbor_cases.test_reject_tags]
  test_micropython[vm-py-cbor_cases.test_reject_tags]   device/ as .py source
  test_micropython[vm-mpy-cbor_cases.test_reject_tags]  device/ compiled by mpy-cross
The VM runs once per runtime (all cases in one process) and reports case by
case through tests/device/vm_harness.py.
"""

import importlib
import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CASE_MODULES = sorted(p.stem for p in (HERE / "cases").glob("*_cases.py"))


def _collect():
    cases = []
    for mod in CASE_MODULES:
        m = importlib.import_module("cases." + mod)
        cases += [f"{mod}.{n}" for n in sorted(dir(m)) if n.startswith("test_") and callable(getattr(m, n))]
    return cases


CASES = _collect()


def _parse(out):
    results, cur, lines = {}, None, []
    for line in out.splitlines():
        if line.startswith("@@CASE "):
            _, name, status = line.split(" ", 2)
            cur, lines = (name, status), []
        elif line == "@@END" and cur:
            results[cur[0]] = (cur[1], "\n".join(lines))
            cur = None
        elif cur:
            lines.append(line)
    return results, "@@DONE" in out.splitlines()


@pytest.fixture(scope="session")
def vm_results(vm, tmp_path_factory):
    cache = {}

    def get(runtime):
        if runtime not in cache:
            paths = [f"{HERE / 'cases'}:/lib/cases", f"{HERE.parents[1] / 'shared' / 'vectors'}:/vectors"]
            kw = {}
            if runtime == "vm-mpy":
                out = tmp_path_factory.mktemp("mpy")
                vm.compile_tree(vm.DEVICE_DIR, out)
                paths = [f"{out}:/lib", f"{vm.VMLIB_DIR}:/lib"] + paths
                kw["default_paths"] = False
            r = vm.run_vm(file=HERE / "vm_harness.py", args=CASE_MODULES, paths=paths, timeout=120, **kw)
            cache[runtime] = (r, *_parse(r.out))
        return cache[runtime]

    return get


@pytest.mark.parametrize("case", CASES)
def test_cpython(case):
    mod, name = case.split(".")
    getattr(importlib.import_module("cases." + mod), name)()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("runtime", ["vm-py", "vm-mpy"])
def test_micropython(runtime, case, vm_results):
    r, results, done = vm_results(runtime)
    if case not in results:
        pytest.fail(
            f"case did not report in MicroPython ({runtime}; VM exit {r.rc}, finished={done})\n"
            f"--- stdout (tail) ---\n{r.out[-3000:]}\n--- stderr ---\n{r.err[-3000:]}",
            pytrace=False,
        )
    status, detail = results[case]
    if status != "OK":
        pytest.fail(f"failed in MicroPython ({runtime}):\n{_with_source(detail)}", pytrace=False)


def _with_source(tb):
    # MicroPython tracebacks carry no source text: add the case file's lines.
    out = []
    for line in tb.splitlines():
        out.append(line)
        m = re.search(r'File "/lib/cases/(\w+\.py)", line (\d+)', line)
        if m:
            src = (HERE / "cases" / m.group(1)).read_text().splitlines()
            n = int(m.group(2))
            if 0 < n <= len(src):
                out.append("    > " + src[n - 1].strip())
    return "\n".join(out)


def test_vm_run_completed(vm_results):
    for runtime in ("vm-py", "vm-mpy"):
        r, results, done = vm_results(runtime)
        assert done and r.rc == 0, f"{runtime}: VM exit {r.rc}\n{r.out[-2000:]}\n{r.err[-2000:]}"
        assert sorted(results) == sorted(CASES)
