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

Ports: the machine is shared, and a port found free, then let go, can be
taken by another program before our server binds it. So no port is let go
between our choice and the server's bind: a server in this process, or a
child that can inherit a socket (uvicorn), gets a socket bound here to port
0 (``listening_socket``). A child that needs a number on its command line
(redis-server, mosquitto) gets a port held by ``reserve_port()`` from
``start()`` to ``close()``, restarts included, which the child can still
bind; should it report the port taken anyway, it gets a fresh one, a few
times at most.
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
from typing import Self

HOST = "127.0.0.1"


class ServiceMissing(RuntimeError):
    """The service's program is not installed."""


class ServiceFailed(RuntimeError):
    """The service did not start (its log is in the message)."""


class PortTaken(ServiceFailed):
    """The service could not bind its port: another program holds it."""


# strerror(EADDRINUSE), as redis-server, mosquitto and Python all report a port taken.
PORT_TAKEN = "Address already in use"
# Fresh ports to try when a child finds its port taken: each is a random pick among
# thousands, so more than one collision in a row means something else is wrong.
PORT_ATTEMPTS = 5


def reserve_port(host: str = HOST, port: int = 0) -> socket.socket:
    """A socket holding a port (on 0, any free one) for a server that binds it by number.

    Bound with SO_REUSEADDR and never listening: the kernel gives the port
    to nobody else (a bind to port 0 skips it, a bind without SO_REUSEADDR
    fails), while a server that sets SO_REUSEADDR, as redis-server,
    mosquitto and `crumb issuer serve` do, can bind it and listen.
    Connections are refused until that server listens.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def listening_socket(host: str = HOST, port: int = 0, backlog: int = 128) -> socket.socket:
    """A TCP socket bound and listening; on port 0 the kernel picks a port, which stays ours while it is open."""
    # No Nagle on the connections it accepts (they inherit TCP_NODELAY on Linux): a
    # response written in two parts would wait 40 ms for the client's delayed ACK.
    # asyncio sets it too, but only on sockets it can tell are TCP: IPPROTO_TCP said.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if port:  # a port used before (a restart) may still have connections in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class RefusingPort:
    """A loopback port where every connection is refused, for as long as this object is open.

    Its socket is bound (without SO_REUSEADDR) and never listens: the
    kernel refuses connections, and no other program can bind the port
    meanwhile. (A port found free and let go could be taken, and a test
    expecting "refused" would then talk to a stranger.)
    """

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.port = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    start_timeout = 60.0

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None  # None: inherit this process's environment
        self._finalizer: weakref.finalize | None = None
        self._hold: socket.socket | None = None  # reserve_port(): the port, from start() to close()

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

    def start(self) -> LocalServer:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"crumb-{self.name}-"))
            # Removed by close(), or at the latest when this object goes away.
            weakref.finalize(self, shutil.rmtree, self.dir, True)
        fixed = bool(self.port)  # given by the caller, or kept for a restart: that port or nothing
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._reserve()
            try:
                self._launch()
                return self
            except PortTaken:
                if fixed:
                    raise
                # Someone bound our held port anyway (SO_REUSEADDR, by number): take another.
                self._release()
                self.port = 0
                if attempt == PORT_ATTEMPTS:
                    raise ServiceFailed(f"{self.name}: the port held for it was taken anyway, "
                                        f"{PORT_ATTEMPTS} times in a row; log:\n{self.log_tail()}") from None
        return self

    def _reserve(self) -> None:
        """Hold the port (any free one, unless set) until close(), so that a restart finds it free."""
        if self._hold is not None:
            return
        try:
            self._hold = reserve_port(self.host, self.port)
        except OSError:
            if not self.port:
                raise
            return  # a given port another program listens on: the child reports it (PortTaken)
        self.port = self._hold.getsockname()[1]

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    def pass_fds(self) -> tuple[int, ...]:
        """File descriptors the child inherits (a listening socket, for servers that take one)."""
        return ()

    def _launch(self) -> None:
        exe = self.executable()
        with open(self.log_path, "ab") as log:
            log_start = log.tell()  # the log is kept across restarts: this launch's part starts here
            proc = subprocess.Popen([exe, *self.command()], cwd=self.dir, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                                    pass_fds=self.pass_fds())
        self.proc = proc
        self._finalizer = weakref.finalize(self, _kill, proc)
        # Generous: a loaded machine can take seconds to start a process; a child that
        # exits is noticed at once (poll), so this only bounds a child that hangs.
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if listens(proc.pid, self.port) is not False and self.ping():
                return
            time.sleep(0.02)
        self._reap()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(log_start)
                taken = PORT_TAKEN in f.read().decode(errors="replace")
        except OSError:
            taken = False
        error = PortTaken if taken else ServiceFailed
        raise error(f"{self.name} did not start on {self.host}:{self.port}; log:\n{self.log_tail()}")

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
        """Stop the process; the port (still held) and directory are kept for ``start()`` again."""
        self._reap()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop, let the port go and delete the private directory."""
        self.stop()
        self._release()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, question: bytes, answer: bytes, size: int, goodbye: bytes = b"") -> bool:
        """Whether the server answers ``question`` with bytes starting ``answer`` (0.5 s to connect)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(question)
                ok = s.recv(size).startswith(answer)
                if goodbye:
                    s.sendall(goodbye)
                return ok
        except OSError:
            return False


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
        return self._ask(b"PING\r\n", b"+PONG", 64)


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
        # MQTT 3.1.1 CONNECT, clean session, keepalive 10 s, empty client id; the broker
        # is ready when it answers CONNACK "accepted". Then DISCONNECT.
        return self._ask(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00", b"\x20\x02\x00\x00", 4,
                         goodbye=b"\xe0\x00")


class UvicornProcess(LocalServer):
    """An ASGI app (``"module:attr"``) in its own uvicorn process on a free loopback port.

    ``env`` adds to this process's environment (the examples read their
    configuration from it). The listening socket is bound here, when the
    object is made, and handed to uvicorn (``--fd``): ``port`` and ``url``
    are known before ``start()`` (services can be told each other's URLs
    first), and no other program can take the port meanwhile. It stays
    bound until ``close()``, so while stopped, connections wait for the
    restart instead of being refused.
    """

    name = "uvicorn"

    def __init__(self, app: str, *, app_dir: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, name: str | None = None) -> None:
        super().__init__(port)
        self.sock = listening_socket(self.host, self.port)
        self.port = self.sock.getsockname()[1]
        self.app = app
        self.app_dir = str(app_dir) if app_dir is not None else None
        self.env = {**os.environ, **(env or {})}
        if name:
            self.name = name

    def _reserve(self) -> None:
        pass  # self.sock holds the port

    def pass_fds(self) -> tuple[int, ...]:
        return (self.sock.fileno(),)

    def close(self) -> None:
        super().close()
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def executable(self) -> str:
        import sys

        return sys.executable

    def command(self) -> list[str]:
        cmd = ["-m", "uvicorn", self.app, "--fd", str(self.sock.fileno()), "--log-level", "warning",
               "--no-access-log"]
        if self.app_dir:
            cmd += ["--app-dir", self.app_dir]
        return cmd

    def ping(self) -> bool:
        # An HTTP answer, of any status: our socket accepts connections before uvicorn serves them.
        return self._ask(b"GET / HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n", b"HTTP/1.", 16)


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
        self.sock: socket.socket | None = listening_socket(self.host, port or 0)  # uvicorn serves this socket
        self.port = self.sock.getsockname()[1]
        self._config = uvicorn.Config(app, host=self.host, port=self.port, **config)
        self._server: uvicorn.Server | None = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> AppServer:
        import threading

        import uvicorn

        if self.sock is None:  # started again after stop(): the same port
            self.sock = listening_socket(self.host, self.port)
        server = self._server = uvicorn.Server(self._config)
        sockets = [self.sock]
        self._thread = threading.Thread(target=lambda: server.run(sockets=sockets), name=f"uvicorn:{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout  # generous: only a server that hangs takes this long
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceFailed(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class WSGIAppServer:
    """A WSGI app served by a threaded werkzeug server on a free loopback port, in a thread."""

    def __init__(self, app, port: int | None = None) -> None:
        from werkzeug.serving import make_server

        self.host = HOST
        self._server = make_server(self.host, port or 0, app, threaded=True)  # binds here: port 0 is any free one
        self.port = self._server.port
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> WSGIAppServer:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
