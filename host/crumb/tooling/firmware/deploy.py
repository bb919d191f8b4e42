"""`crumb firmware deploy`: a bundle and a device's credentials onto a board, checked.

It speaks to the board the way a firmware engineer does, through mpremote
(the MicroPython project's tool, over the board's USB serial REPL). It asks
the board which MicroPython it runs and refuses a bundle that firmware
cannot load; enrolls the device (or derives the credentials of an enrolled
one again: they are never stored); copies the bundle, crumb.json and the
settings; then lists every file on the board with its SHA-256 and compares.
The credentials and the settings (Wi-Fi password) are never printed: they
go from a 0600 file in a private temporary folder to the board, and the
folder is deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...issuer.devices import Lifecycle, LifecycleError, write_credentials
from . import mpycompat
from .bundle import MANIFEST, Board, FirmwareError, build, read_manifest

CREDENTIALS = "crumb.json"
CONFIG = "config.json"
MPREMOTE_TIMEOUT = 300  # seconds for one mpremote run: copying a bundle over a slow UART takes a while

# Run on the board: what it is. sys.implementation._mpy packs the .mpy version its loader
# reads (low byte), the sub-version (bits 8-9) and the native architecture (bits 10+).
_ASK_BOARD = (
    "import sys, os\n"
    "v = sys.implementation.version\n"
    "print('@@BOARD', '%d.%d.%d' % (v[0], v[1], v[2]), getattr(sys.implementation, '_mpy', 0), "
    "sys.platform, os.getcwd())\n"
)

# Run on the board: every file below the current folder with its SHA-256.
_LIST_FILES = (
    "import os, hashlib, binascii\n"
    "def _walk(d):\n"
    "    for e in os.ilistdir(d or '.'):\n"
    "        p = d + '/' + e[0] if d else e[0]\n"
    "        if e[1] == 0x4000:\n"
    "            _walk(p)\n"
    "            continue\n"
    "        h = hashlib.sha256()\n"
    "        with open(p, 'rb') as f:\n"
    "            while True:\n"
    "                b = f.read(512)\n"
    "                if not b:\n"
    "                    break\n"
    "                h.update(b)\n"
    "        print('@@FILE', p, binascii.hexlify(h.digest()).decode())\n"
    "_walk('')\n"
)


@dataclass
class BoardInfo:
    micropython: str
    mpy: int  # sys.implementation._mpy
    platform: str
    cwd: str


@dataclass
class Deployment:
    device: str
    board: BoardInfo
    bundle: Path
    enrolled: bool
    copied: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # path on the board -> sha256
    config_on_board: bool = False


class Mpremote:
    """mpremote of this Python environment, connected to ``port`` for each run."""

    def __init__(self, port: str, timeout: float = MPREMOTE_TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout

    def run(self, *args: str, cwd: Path | None = None) -> str:
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        try:
            p = subprocess.run(cmd, capture_output=True, check=False, text=True, timeout=self.timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise FirmwareError(f"mpremote on {self.port} did not finish within {self.timeout:.0f} s") from None
        if p.returncode != 0:
            said = (p.stderr or p.stdout).strip().splitlines()
            raise FirmwareError(f"mpremote on {self.port} failed: {said[-1] if said else f'exit {p.returncode}'}")
        return p.stdout

    def exec(self, code: str) -> str:
        return self.run("exec", code)


def ask_board(mp: Mpremote) -> BoardInfo:
    for line in mp.exec(_ASK_BOARD).splitlines():
        if line.startswith("@@BOARD "):
            _, version, mpy, platform, cwd = line.split(" ", 4)
            return BoardInfo(version, int(mpy), platform, cwd)
    raise FirmwareError(f"the board on {mp.port} did not say which MicroPython it runs")


def board_files(mp: Mpremote) -> dict[str, str]:
    files = {}
    for line in mp.exec(_LIST_FILES).splitlines():
        if line.startswith("@@FILE "):
            _, path, digest = line.rsplit(" ", 2)
            files[path] = digest
    return files


def _shadowing(manifest: dict[str, Any]) -> list[str]:
    # foo.py is imported before foo.mpy from the same folder, and the board's root
    # comes before lib/ on sys.path: an old source copy would run instead of the bundle.
    out = []
    for f in manifest["files"]:
        path = f["path"]
        if path.startswith("lib/") and path.endswith(".mpy"):
            rel = path[len("lib/"):-len(".mpy")]
            out += [f"lib/{rel}.py", f"{rel}.py", f"{rel}.mpy"]
    return out


def deploy(port: str, device: str, life: Lifecycle, *, group: str | None = None, config: Path | None = None,
           bundle_dir: Path | None = None, board: Board | None = None, app: Path | None = None,
           say: Callable[[str], None] = print) -> Deployment:
    """Deploy to the board on ``port`` as ``device`` (see the module docstring)."""
    mp = Mpremote(port)
    info = ask_board(mp)
    say(f"board on {port}: MicroPython {info.micropython} ({info.platform}), loads mpy "
        f"v{info.mpy & 0xFF}.{info.mpy >> 8 & 3}")
    with tempfile.TemporaryDirectory(prefix="crumb-deploy-") as tmp:  # 0700: only we can read it
        work = Path(tmp)
        if bundle_dir is None:
            if app is None:
                raise FirmwareError("no bundle: pass --bundle DIR, or run from a crumb checkout (or --app DIR)")
            target = board or Board("board", info.platform, "x64", info.micropython)
            bundle_dir = build(target, app, work / "bundle", micropython=info.micropython).dir
        manifest = read_manifest(bundle_dir)
        bundle_hash = _sha256(bundle_dir / MANIFEST)
        _check_bundle(bundle_dir, manifest, info)
        try:
            creds = life.existing(device)
            enrolled = creds is None
            if creds is None:
                creds, _ = life.enroll(device, group)
        except LifecycleError as e:
            raise FirmwareError(str(e)) from None
        secrets_dir = work / "secrets"
        secrets_dir.mkdir(mode=0o700)
        write_credentials(secrets_dir / CREDENTIALS, creds)
        result = Deployment(device, info, bundle_dir, enrolled)
        expected = {f["path"]: f["sha256"] for f in manifest["files"]}
        expected[CREDENTIALS] = _sha256(secrets_dir / CREDENTIALS)
        if config is not None:
            try:
                json.loads(config.read_text())
            except (OSError, ValueError) as e:
                raise FirmwareError(f"--config {config}: not a readable JSON settings file ({e})") from None
            shutil.copyfile(config, secrets_dir / CONFIG)
            (secrets_dir / CONFIG).chmod(0o600)
            expected[CONFIG] = _sha256(secrets_dir / CONFIG)

        stale = _shadowing(manifest)
        mp.exec(f"import os\nfor p in {stale!r}:\n    try:\n        os.remove(p)\n    except OSError:\n        pass\n")
        args: list[str] = ["fs", "mkdir", ":lib", "+"] if "lib" not in _dirs(mp) else []
        args += ["fs", "cp", "-r", "lib", ":"]
        for f in manifest["files"]:
            if "/" not in f["path"]:
                args += ["+", "fs", "cp", f["path"], ":" + f["path"]]
        args += ["+", "fs", "cp", str(secrets_dir / CREDENTIALS), ":" + CREDENTIALS]
        if config is not None:
            args += ["+", "fs", "cp", str(secrets_dir / CONFIG), ":" + CONFIG]
        mp.run(*args, cwd=bundle_dir)
        result.copied = sorted(expected)

    on_board = board_files(mp)
    wrong = [p for p, digest in expected.items() if on_board.get(p) != digest]
    if wrong:
        raise FirmwareError(f"the copy on {port} does not match for {', '.join(sorted(wrong))}: deploy again")
    result.checked = {p: on_board[p] for p in expected}
    result.config_on_board = CONFIG in on_board
    life.record(device, {"event": "deployed", "port": port, "micropython": info.micropython,
                         "bundle": bundle_hash})
    return result


def _dirs(mp: Mpremote) -> set[str]:
    out = mp.exec("import os\nprint('@@DIRS', ' '.join(e[0] for e in os.ilistdir() if e[1] == 0x4000))")
    for line in out.splitlines():
        if line.startswith("@@DIRS"):
            return set(line.split()[1:])
    return set()


def _check_bundle(bundle_dir: Path, manifest: dict[str, Any], info: BoardInfo) -> None:
    mpys = [f["path"] for f in manifest["files"] if f["path"].endswith(".mpy")]
    if not mpys:
        return
    # The board's own word on its CPU: sys.implementation._mpy carries its native arch (bits 10+).
    code = info.mpy >> 10 & 0x0F
    board_arch = mpycompat.ARCH_NAMES[code - 1] if 0 < code <= len(mpycompat.ARCH_NAMES) else None
    for rel in mpys:
        try:
            mpycompat.check(mpycompat.header_of(bundle_dir / rel), info.micropython, board_arch=board_arch)
        except (mpycompat.Incompatible, ValueError) as e:
            raise FirmwareError(f"{bundle_dir} cannot run on this board ({rel}): {e}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["MANIFEST", "BoardInfo", "Deployment", "Mpremote", "deploy"]
