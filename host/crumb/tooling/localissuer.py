"""`crumb issuer serve` in a child process on a free loopback port: for tests, benches and demos.

Ready means our issuer answers: /healthz reports the current kid of *this*
data directory's keyring, so another program that happens to hold the port
is never mistaken for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import httpx

from .localservices import free_port, terminate
from ..issuer.keystore import Keyring


class IssuerFailed(RuntimeError):
    pass


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
                 args: tuple[str, ...] = (), start_timeout: float = 20.0) -> None:
        self.data = Path(data)
        self.config = Path(config) if config else None
        self.redis_url = redis_url
        self.processes = processes
        self.port = port or free_port()
        self.args = args
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._log = Path(tempfile.mkstemp(prefix="crumb-issuer-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "crumb.cli", "issuer", "serve", "--data", str(self.data),
               "--host", "127.0.0.1", "--port", str(self.port), "--processes", str(self.processes), *self.args]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        return cmd

    def start(self) -> "LocalIssuer":
        if self.proc is not None:
            raise RuntimeError("the issuer is already running")
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        # An issuer must not outlive a crashed test run or bench.
        self._finalizer = weakref.finalize(self, _kill, self.proc)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise IssuerFailed(f"the issuer exited with code {code} while starting; log:\n{self.log_tail()}")
            if self._ours():
                return self
            time.sleep(0.05)
        self.stop()
        raise IssuerFailed(f"the issuer did not answer on {self.url} within {self.start_timeout}s; "
                           f"log:\n{self.log_tail()}")

    def _ours(self) -> bool:
        try:
            r = httpx.get(f"{self.url}/healthz", timeout=1.0)
            kid = r.json().get("kid")
        except (httpx.HTTPError, ValueError):
            return False
        try:
            ring = Keyring.open(self.data / "keys", create=False)
        except Exception:
            return False
        return ring.current is not None and kid == ring.current.kid.hex()

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

    def __enter__(self) -> "LocalIssuer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
