"""`crumb issuer serve` in a child process on a free loopback port: for tests, benches and demos.

Without a port given, the issuer binds port 0 (any free port, so no other
program can take it between our choice and its bind) and its first line
says which port it got. Ready means our issuer answers: /healthz reports
the current kid of *this* data directory's keyring, so another program that
happens to hold the port is never mistaken for it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Self

import httpx

from ..issuer.keystore import Keyring
from .localservices import PORT_TAKEN, terminate


class IssuerFailed(RuntimeError):
    pass


class PortTaken(IssuerFailed):
    """The port given could not be bound: another program holds it."""


# The issuer's first line on stderr: "crumb issuer on http://127.0.0.1:PORT  (...)".
_BANNER = re.compile(rb"crumb issuer on http://\S+:(\d+)\s")
# With --coap, a line of its own once the UDP port is bound: "crumb issuer CoAP on coap://127.0.0.1:PORT  (...)".
_COAP_BANNER = re.compile(rb"crumb issuer CoAP on coap://\S+:(\d+)\s")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its worker processes
        except ProcessLookupError:
            pass
        proc.wait()


class LocalIssuer:
    def __init__(self, data: str | os.PathLike, config: str | os.PathLike | None = None, *,
                 redis_url: str | None = None, processes: int = 1, port: int | None = None,
                 args: tuple[str, ...] = (), start_timeout: float = 60.0) -> None:
        self.data = Path(data)
        self.config = Path(config) if config else None
        self.redis_url = redis_url
        self.processes = processes
        self.port = port  # None: any free port, known once started
        self.args = args
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.coap_port: int | None = None  # with args ("--coap", ...): the UDP port, once started
        self._finalizer: weakref.finalize | None = None
        self._log = Path(tempfile.mkstemp(prefix="crumb-issuer-", suffix=".log")[1])

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the issuer's port is known once it has started")
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "crumb.cli", "issuer", "serve", "--data", str(self.data),
               "--host", "127.0.0.1", "--port", str(self.port or 0), "--processes", str(self.processes), *self.args]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        return cmd

    def start(self) -> LocalIssuer:
        """Start and wait until it answers. A restart keeps the port of the first start."""
        if self.proc is not None:
            raise RuntimeError("the issuer is already running")
        with open(self._log, "ab") as log:
            log_start = log.tell()  # the log is kept across restarts: this start's part begins here
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        # An issuer must not outlive a crashed test run or bench.
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        # Generous: a loaded machine can take seconds to start the issuer; an issuer
        # that exits is noticed at once, so this only bounds one that hangs.
        deadline = time.monotonic() + self.start_timeout
        answered: set = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                error = PortTaken if PORT_TAKEN.encode() in self._log_since(log_start) else IssuerFailed
                raise error(f"the issuer exited with code {code} while starting; log:\n{self.log_tail()}")
            if self.port is None:
                found = _BANNER.search(self._log_since(log_start))
                if found:
                    self.port = int(found.group(1))
            if self.port is not None and self._ours(answered):
                # The HTTP side answers once the lifespan (which binds the CoAP port first) is done.
                found = _COAP_BANNER.search(self._log_since(log_start))
                if found:
                    self.coap_port = int(found.group(1))
                return self
            time.sleep(0.05)
        self.stop()
        raise IssuerFailed(f"the issuer did not answer on port {self.port} within {self.start_timeout}s; "
                           f"log:\n{self.log_tail()}")

    def _log_since(self, offset: int) -> bytes:
        try:
            with open(self._log, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def _ours(self, answered: set) -> bool:
        """Whether our issuer answers, with all its processes (``answered``: their pids so far)."""
        try:
            r = httpx.get(f"{self.url}/healthz", timeout=1.0)
            health = r.json()
        except (httpx.HTTPError, ValueError):
            return False
        if not isinstance(health, dict):  # some other program's answer
            return False
        try:
            ring = Keyring.open(self.data / "keys", create=False)
        except (OSError, ValueError):  # no keyring yet, or one being written
            return False
        if ring.current is None or health.get("kid") != ring.current.kid.hex():
            return False
        # Each worker process binds the port once it has started; until then the others
        # take every connection. Each poll is a new connection, which the kernel gives to
        # any worker listening: ready once every one of them has answered.
        answered.add(health.get("pid"))
        return len(answered) >= self.processes

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        terminate(proc, 15)  # SIGTERM first: the audit writer flushes

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
