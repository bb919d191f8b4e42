# Device test cases, written once and run both on CPython (imported by
# tests/device/test_device_cases.py) and inside the MicroPython VM (through
# tools/mpy/run.mjs and tests/device/vm_harness.py).
#
# Rules for case modules: plain `def test_*():` functions, only `assert` and
# modules MicroPython has (no pytest, no typing, no f-string `=`).
from binascii import unhexlify


def h(s):
    # hex (spaces allowed) -> bytes
    return unhexlify(s.replace(" ", ""))


def raises(exc, fn, *args, **kw):
    # Assert fn(*args) raises exactly an instance of exc; return the exception.
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    except Exception as e:
        raise AssertionError("expected %s, got %s: %r (args %r)" % (exc.__name__, type(e).__name__, e, args))
    raise AssertionError("expected %s, nothing raised (args %r)" % (exc.__name__, args))
