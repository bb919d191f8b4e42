"""The device client against a misbehaving issuer over real loopback sockets.

The same cases (tests/device/netcases/failures.py) run on CPython and inside
the MicroPython VM, where the sockets go through the VM's bridge.
"""

import importlib

import pytest

from badissuer import BadIssuer
from test_device_cases import HERE, _parse, _with_source

MODULE = "netcases.failures"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))


def _closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.fixture(scope="module")
def servers():
    with BadIssuer() as bad:
        yield f"{bad.url},http://127.0.0.1:{_closed_port()}"


@pytest.mark.parametrize("case", CASES)
def test_cpython(case, servers):
    m.setup(servers)
    getattr(m, case)()


@pytest.fixture(scope="module")
def vm_run(vm, servers):
    paths = [f"{HERE / 'cases'}:/lib/cases", f"{HERE / 'netcases'}:/lib/netcases"]
    r = vm.run_vm(file=HERE / "vm_harness.py", args=[f"{MODULE}={servers}"], paths=paths, timeout=120)
    results, done = _parse(r.out)
    assert done and r.rc == 0, f"VM exit {r.rc}\n{r.out[-3000:]}\n{r.err[-3000:]}"
    return results


@pytest.mark.parametrize("case", CASES)
def test_micropython(case, vm_run):
    status, detail = vm_run[f"{MODULE}.{case}"]
    if status != "OK":
        pytest.fail(f"failed in MicroPython:\n{_with_source(detail)}", pytrace=False)
