"""Private local services for tests, benchmarks and examples.

    with RedisServer() as redis:          # redis-server on a free loopback port
        store = RedisReplayStore(redis.url)
    with MosquittoServer() as broker:     # mosquitto on a free loopback port
        consumer = MqttConsumer(..., host=broker.host, port=broker.port)

Each server runs from the system package (`tools/setup_test_env.sh` installs
them), listens on 127.0.0.1 only, keeps its files in a temporary directory,
persists nothing, and is ready when ``start()`` returns: readiness is a real
protocol exchange (PING / CONNECT), not a sleep. A missing binary raises
``ServiceMissing`` with the command that installs it, so a suite that needs the
service fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

HOST = "127.0.0.1"


class ServiceMissing(RuntimeError):
    """The service's program is not installed."""


class ServiceFailed(RuntimeError):
    """The service did not start (its log is in the message)."""


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (None: cannot tell here).

    Readiness must be *our* server answering: another program already on the
    port would answer a ping just as well.
    """
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        if not inodes:
            return False
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
        return False
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def _kill(proc: subprocess.Popen) -> None:
    # Used by weakref.finalize: a server must not outlive a crashed test run.
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is not gone within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalServer:
    """A child process listening on a loopback port, with a private directory."""

    program = ""
    name = ""
    start_timeout = 10.0

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None  # None: inherit this process's environment
        self._finalizer: weakref.finalize | None = None

    # -- what a subclass provides
    def command(self) -> list[str]:
        raise NotImplementedError

    def ping(self) -> bool:
        """True once the service answers a real request."""
        raise NotImplementedError

    # -- lifecycle
    def executable(self) -> str:
        path = shutil.which(self.program) or next(
            (p for p in (f"/usr/sbin/{self.program}", f"/usr/bin/{self.program}") if os.access(p, os.X_OK)), None)
        if path is None:
            raise ServiceMissing(
                f"{self.program} is not installed: run tools/setup_test_env.sh "
                f"(apt-get install redis-server mosquitto)")
        return path

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.name}.log"

    def start(self) -> "LocalServer":
        if self.proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"crumb-{self.name}-"))
            # Removed by close(), or at the latest when this object goes away.
            weakref.finalize(self, shutil.rmtree, self.dir, True)
        fixed_port = bool(self.port)
        for attempt in range(3):  # a free port can be taken between probing and binding
            if not fixed_port:
                self.port = free_port()
            try:
                self._launch()
                return self
            except ServiceFailed:
                if fixed_port or attempt == 2:
                    raise
        return self

    def _launch(self) -> None:
        exe = self.executable()
        log = open(self.log_path, "ab")
        try:
            proc = subprocess.Popen([exe, *self.command()], cwd=self.dir, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        finally:
            log.close()
        self.proc = proc
        self._finalizer = weakref.finalize(self, _kill, proc)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if listens(proc.pid, self.port) is not False and self.ping():
                return
            time.sleep(0.02)
        self._reap()
        raise ServiceFailed(f"{self.name} did not start on {self.host}:{self.port}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _reap(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        terminate(proc, timeout)

    def stop(self) -> None:
        """Stop the process; the port and directory are kept for ``start()`` again."""
        self._reap()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop and delete the private directory."""
        self.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection((self.host, self.port), timeout=0.5)
        except OSError:
            return None


class RedisServer(LocalServer):
    """``redis-server`` on loopback: no persistence, no eviction (a replay store must never forget)."""

    program = "redis-server"
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return ["--bind", self.host, "--port", str(self.port), "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"]

    def ping(self) -> bool:
        s = self._connect()
        if s is None:
            return False
        with s:
            try:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
            except OSError:
                return False


class MosquittoServer(LocalServer):
    """``mosquitto`` on loopback, anonymous access, no persistence."""

    program = "mosquitto"
    name = "mosquitto"

    def command(self) -> list[str]:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\n"
        )
        return ["-c", str(conf)]

    def ping(self) -> bool:
        s = self._connect()
        if s is None:
            return False
        # MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, empty client id;
        # the broker is ready when it answers CONNACK "accepted".
        connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"
        with s:
            try:
                s.sendall(connect)
                ok = s.recv(4) == b"\x20\x02\x00\x00"
                s.sendall(b"\xe0\x00")  # DISCONNECT
                return ok
            except OSError:
                return False


class UvicornProcess(LocalServer):
    """An ASGI app (``"module:attr"``) in its own uvicorn process on a free loopback port.

    ``env`` adds to this process's environment (the examples read their
    configuration from it).
    """

    name = "uvicorn"

    def __init__(self, app: str, *, app_dir: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, name: str | None = None) -> None:
        super().__init__(port)
        self.app = app
        self.app_dir = str(app_dir) if app_dir is not None else None
        self.env = {**os.environ, **(env or {})}
        if name:
            self.name = name

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def executable(self) -> str:
        import sys

        return sys.executable

    def command(self) -> list[str]:
        cmd = ["-m", "uvicorn", self.app, "--host", self.host, "--port", str(self.port),
               "--log-level", "warning", "--no-access-log"]
        if self.app_dir:
            cmd += ["--app-dir", self.app_dir]
        return cmd

    def ping(self) -> bool:
        s = self._connect()
        if s is None:
            return False
        s.close()
        return True


class AppServer:
    """An ASGI app served by uvicorn on a free loopback port, in a background thread.

    For tests and benchmarks that want a real HTTP server in-process; the
    examples and the chain test run uvicorn as separate processes instead.
    """

    def __init__(self, app, port: int | None = None, **config) -> None:
        import uvicorn

        config.setdefault("log_level", "warning")
        config.setdefault("lifespan", "off")
        self.host = HOST
        self.port = port or free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, **config))
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "AppServer":
        import threading

        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceFailed(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class WSGIAppServer:
    """A WSGI app served by a threaded werkzeug server on a free loopback port, in a thread."""

    def __init__(self, app, port: int | None = None) -> None:
        from werkzeug.serving import make_server

        self.host = HOST
        self.port = port or free_port()
        self._server = make_server(self.host, self.port, app, threaded=True)
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "WSGIAppServer":
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, name=f"wsgi:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "WSGIAppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
