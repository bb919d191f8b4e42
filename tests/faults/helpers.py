"""Small helpers the fault tests share: bounded waits and a process-group kill."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

# Bounded waits only catch a hang: each ends as soon as its condition holds, so a
# loaded machine takes longer without failing. Nothing here asserts a duration.
WAIT = 60.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({timeout:.0f} s) for {what}")
        time.sleep(step)


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group of our own child ``pid`` (it runs in its own session)."""
    os.killpg(pid, sig)


def sigkill_issuer(local) -> None:
    """kill -9 a LocalIssuer's process group (the server and any workers), then forget the process,
    so that ``local.start()`` starts it again on the same port."""
    proc = local.proc
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    local.stop()  # the process is gone: this only drops LocalIssuer's handle and finalizer
