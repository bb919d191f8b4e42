# Device tests: the same cases run on CPython and inside MicroPython (the
# official WebAssembly port under Node.js, see docs/micropython-vm.md).
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (HERE, REPO / "device", REPO / "tools" / "mpy"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Detailed assertion messages for the shared case modules on CPython.
pytest.register_assert_rewrite("cases")

import mpyvm


@pytest.fixture(scope="session")
def vm():
    """The mpyvm helper module, after checking the VM can run (fails, never skips)."""
    try:
        mpyvm.check_vm()
        problem = None
    except mpyvm.VMUnavailable as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)
    return mpyvm
