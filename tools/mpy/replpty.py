"""The MicroPython WebAssembly VM's REPL on a pseudo-terminal, for mpremote.

    with ReplPty(root=flash_dir) as board:
        subprocess.run([".venv/bin/mpremote", "connect", board.path, "exec", "print(1)"], timeout=60)

    python tools/mpy/replpty.py [--root DIR]      # prints /dev/pts/N, serves until Ctrl-C

A pty pair is opened; ``node tools/mpy/repl.mjs`` (the VM's REPL on
stdin/stdout) runs with pipes, and a relay thread moves bytes between its
pipes and the pty's master side. The slave side (``path``, /dev/pts/N) is the
"board's serial port": mpremote opens it as it opens /dev/ttyACM0.

The slave is kept open here and set to raw mode, so the pty stays up between
two mpremote runs and no line discipline (echo, CR/LF translation) alters the
bytes. What the VM prints while no one reads the port queues in the pty; past
``BACKLOG`` bytes the oldest are dropped, as a board's USB serial drops output
nobody reads. Every wait is bounded; ``close()`` ends the VM (EOF on its stdin,
then SIGTERM, then SIGKILL) and the relay.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Self

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REPL_MJS = HERE / "repl.mjs"
BACKLOG = 1 << 20


class ReplPtyError(RuntimeError):
    """The VM did not start, or stopped."""


class ReplPty:
    """The VM's REPL behind a pty: ``path`` is the port, ``root`` the board's flash.

    ``root``: host directory backing the board's filesystem (kept); without
    it a temporary directory is used and removed by ``close()``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, heap: str | None = None,
                 net_max_timeout: float | None = None, start_timeout: float = 30.0) -> None:
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix="crumb-flash-")
        self.root = Path(root if root is not None else self._tmp).resolve()
        self.root.mkdir(parents=True, exist_ok=True)  # a board's flash is there before anything is copied
        self._cmd = [self._node(), str(REPL_MJS), "--root", str(self.root)]
        if heap is not None:
            self._cmd += ["--heap", heap]
        if net_max_timeout is not None:
            self._cmd += ["--net-max-timeout", str(net_max_timeout)]
        self._start_timeout = start_timeout
        self.path = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._seen = b""  # the VM's first output, to see its REPL come up
        self._ready = threading.Event()
        self._stderr = bytearray()

    @staticmethod
    def _node() -> str:
        node = shutil.which("node")
        if not node:
            raise ReplPtyError("Node.js ('node') not found on PATH (run: bash tools/setup_test_env.sh)")
        return node

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def stderr(self) -> str:
        """What repl.mjs wrote to its stderr (set-up errors, VM errors)."""
        return self._stderr.decode("utf-8", "replace")

    @property
    def pid(self) -> int | None:
        """The node process's id (None before start and after close)."""
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        # Its own session: a Ctrl-C typed at the CLI is handled by close(),
        # not delivered to the VM mid-run.
        self._proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
        self._thread = threading.Thread(target=self._relay, name="replpty-relay", daemon=True)
        self._thread.start()
        # Up when the REPL's first prompt (friendly ">>> ") has been printed:
        # boot.py and main.py have run by then.
        deadline = time.monotonic() + self._start_timeout
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:  # it stopped: say why at once
                time.sleep(0.1)  # the relay's last read of its stderr
                err = self.stderr
                why = (f"exited with {self._proc.returncode}" if self._proc.poll() is not None
                       else f"did not come up within {self._start_timeout} s")
                self.close()
                raise ReplPtyError(f"the VM's REPL {why}\n{err}")

    def _relay(self) -> None:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout and self._proc.stderr
        vm_in, vm_out, vm_err = self._proc.stdin.fileno(), self._proc.stdout.fileno(), self._proc.stderr.fileno()
        for fd in (self._master, vm_in, vm_out, vm_err):
            os.set_blocking(fd, False)
        to_vm: deque[bytes] = deque()
        to_port: deque[bytes] = deque()
        queued = 0
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        sel.register(vm_out, selectors.EVENT_READ)
        sel.register(vm_err, selectors.EVENT_READ)
        sel.register(self._master, selectors.EVENT_READ)
        open_out = 2
        try:
            while open_out:
                # Interest in writability only while there is something to write.
                sel.modify(self._master, selectors.EVENT_READ | (selectors.EVENT_WRITE if to_port else 0))
                want_in = selectors.EVENT_WRITE if to_vm else 0
                if want_in and vm_in not in sel.get_map():
                    sel.register(vm_in, want_in)
                elif not want_in and vm_in in sel.get_map():
                    sel.unregister(vm_in)
                for key, ev in sel.select(1.0):
                    fd = key.fd
                    if fd == self._wake_r:
                        return
                    if fd in (vm_out, vm_err):
                        data = _read(fd)
                        if data is None:
                            continue
                        if not data:
                            sel.unregister(fd)
                            open_out -= 1
                        elif fd == vm_err:
                            self._stderr += data[-65536:]
                        else:
                            if not self._ready.is_set():
                                self._seen = (self._seen + data)[-64:]
                                if b">>> " in self._seen or b"raw REPL; CTRL-B to exit\r\n>" in self._seen:
                                    self._ready.set()
                            to_port.append(data)
                            queued += len(data)
                            while queued > BACKLOG:  # nobody reads the port: drop the oldest
                                queued -= len(to_port.popleft())
                    elif fd == self._master:
                        if ev & selectors.EVENT_READ:
                            data = _read(fd)
                            if data:
                                to_vm.append(data)
                        if ev & selectors.EVENT_WRITE and to_port:
                            n = _write(fd, to_port)
                            queued -= n
                    elif fd == vm_in:
                        _write(fd, to_vm)
        except OSError:
            pass  # the VM's pipes closed under us: it has stopped
        finally:
            sel.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the VM (bounded: EOF, then SIGTERM, then SIGKILL) and the relay."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin
                proc.stdin.close()  # repl.mjs ends at EOF once the VM is idle
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # A VM busy in a loop never returns to read its input.
                for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                    try:
                        proc.wait(wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if proc is not None:
            for f in (proc.stdout, proc.stderr):
                if f:
                    f.close()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _read(fd: int) -> bytes | None:
    """Up to 64 KiB, b"" at EOF, None when nothing is there after all."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""  # EIO on the master: same as EOF


def _write(fd: int, q: deque[bytes]) -> int:
    """Write from the head of ``q`` as much as ``fd`` takes; bytes written."""
    try:
        n = os.write(fd, q[0])
    except BlockingIOError:
        return 0
    if n == len(q[0]):
        q.popleft()
    else:
        q[0] = q[0][n:]
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve the MicroPython WebAssembly VM's REPL on a pty, for mpremote.")
    ap.add_argument("--root", help="host directory backing the board's filesystem (default: a temporary one)")
    ap.add_argument("--heap", help="initial MicroPython heap, e.g. 256k (default: repl.mjs's)")
    ap.add_argument("--net-max-timeout", type=float, help="cap in seconds for a blocking socket operation")
    a = ap.parse_args(argv)
    if a.root:
        Path(a.root).mkdir(parents=True, exist_ok=True)
    with ReplPty(a.root, heap=a.heap, net_max_timeout=a.net_max_timeout) as board:
        print(board.path, flush=True)
        print(f"flash: {board.root}; connect with: mpremote connect {board.path}; Ctrl-C stops", file=sys.stderr)
        try:
            while board.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"repl.mjs stopped:\n{board.stderr}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
