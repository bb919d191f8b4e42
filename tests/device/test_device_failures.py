"""The device client against a misbehaving issuer over real loopback sockets.

The same cases (tests/device/netcases/failures.py) run on CPython, inside
the MicroPython VM, where the sockets go through the VM's bridge, and on the
real MicroPython unix port, with its own sockets (whose recv() raises EAGAIN
when a timeout passes).
"""

import importlib

import pytest
import runtimes
from badissuer import BadIssuer

from crumb.tooling.localservices import RefusingPort

MODULE = "netcases.failures"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))


@pytest.fixture(scope="module")
def servers():
    # DOWN refuses connections, and no other program can listen there while the cases run.
    with BadIssuer() as bad, RefusingPort() as down:
        yield f"{bad.url},{down.url}"


@pytest.mark.parametrize("case", CASES)
def test_cpython(case, servers):
    m.setup(servers)
    getattr(m, case)()


@pytest.fixture(scope="module")
def results(vm, servers, tmp_path_factory):
    return runtimes.results(vm, tmp_path_factory, MODULE, lambda runtime: servers)


test_micropython = runtimes.case_tests(MODULE, CASES)
