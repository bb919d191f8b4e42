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
def results(vm, servers, tmp_path_factory):
    return runtimes.results(vm, tmp_path_factory, MODULE, lambda runtime: servers)


test_micropython = runtimes.case_tests(MODULE, CASES)
