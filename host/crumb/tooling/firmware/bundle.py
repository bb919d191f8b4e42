"""A board's firmware bundle: everything to copy onto the board's filesystem, compiled.

    <out>/<board>/
      boot.py, main.py        source: MicroPython runs these two files at power-on
      lib/ucrumb/*.mpy        the device client
      lib/<module>.mpy        the application's other modules (crumb_app, hal, ...)
      config.example.json     the settings template (the board needs a config.json)
      manifest.json           every file above with its size and SHA-256, and what built it

An application folder (`--app`, by default the checkout's firmware/) holds
boot.py, main.py, its other modules, config.example.json and boards/*.toml.
Its manifest.py (for freezing) is not shipped. Nothing in a bundle depends on
the time or the place it was built: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import mpycompat
from .mpycross import compile_file, compile_tree, mpy_cross_exe
from .mpycross import version as mpy_cross_version

SOURCE_FILES = ("boot.py", "main.py")  # run as files at power-on: never compiled
NOT_SHIPPED = ("manifest.py",)  # the freeze manifest builds firmware; the board has no use for it
CONFIG_TEMPLATE = "config.example.json"
MANIFEST = "manifest.json"
MPY_BUDGET = 24 * 1024  # client + application + HAL, per board
# ucrumb modules that only an optional feature imports (lazily): a bundle carries
# them only when its board file asks for the feature (`features = ["pop"]`), so
# the default bundles stay within MPY_BUDGET.
FEATURE_MODULES: dict[str, tuple[str, ...]] = {
    "pop": ("aesccm.py", "pop.py"),  # proof of possession: the encrypted answer (AES-CCM), the proofs
    "coap": ("coap.py",),  # CoAP over UDP (ucrumb.coap), for coap:// URLs
    # on-device token verification (PROTOCOL.md §7.1): ucrumb.verify and its Ed25519 and SHA-512,
    # for an actuator; larger than the others, so counted on top of MPY_BUDGET (Bundle.feature_total)
    "verify": ("verify.py", "ed25519.py", "sha512.py"),
}


class FirmwareError(Exception):
    """A bundle that cannot be built or deployed, said in words (the CLI prints it and exits 1)."""


@dataclass(frozen=True)
class Board:
    key: str                 # the board file's name: boards/<key>.toml
    name: str
    march: str               # mpy-cross -march, for native code
    micropython: str         # the firmware version the board runs: what its .mpy must load on
    micropython_board: str = ""
    tls: str = ""
    features: tuple[str, ...] = ()  # keys of FEATURE_MODULES the bundle includes


@dataclass
class Bundle:
    board: Board
    dir: Path
    micropython: str
    emit: str
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, size, sha256}

    @property
    def mpy_total(self) -> int:
        return sum(f["size"] for f in self.files if f["path"].endswith(".mpy"))

    @property
    def feature_total(self) -> int:
        """The .mpy bytes of the board's optional features (FEATURE_MODULES), on top of MPY_BUDGET."""
        mods = {"lib/ucrumb/" + m[:-3] + ".mpy" for f in self.board.features for m in FEATURE_MODULES[f]}
        return sum(f["size"] for f in self.files if f["path"] in mods)


def repo_app() -> Path | None:
    """firmware/ of the crumb checkout this package runs from, if it does."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "firmware"
        if (candidate / "boards").is_dir() and (candidate / "main.py").is_file():
            return candidate
    return None


def ucrumb_dir() -> Path:
    import ucrumb

    return Path(ucrumb.__file__).resolve().parent


def load_boards(app: Path) -> dict[str, Board]:
    """The boards of an application folder (boards/*.toml), checked."""
    boards = {}
    for path in sorted((app / "boards").glob("*.toml")):
        try:
            cfg = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise FirmwareError(f"{path}: {e}") from None
        for key in ("name", "march", "micropython"):
            if not isinstance(cfg.get(key), str) or not cfg[key]:
                raise FirmwareError(f"{path}: {key!r} is required (a string)")
        if cfg["march"] not in mpycompat.ARCH_NAMES:
            raise FirmwareError(f"{path}: march {cfg['march']!r} is not one of mpy-cross's: "
                                f"{', '.join(mpycompat.ARCH_NAMES)}")
        try:
            mpycompat.parse_version(cfg["micropython"])
        except ValueError as e:
            raise FirmwareError(f"{path}: micropython: {e}") from None
        features = cfg.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise FirmwareError(f"{path}: features must be a list of strings")
        unknown = sorted(set(features) - set(FEATURE_MODULES))
        if unknown:
            raise FirmwareError(f"{path}: unknown feature(s) {', '.join(unknown)}; known: "
                                f"{', '.join(sorted(FEATURE_MODULES))}")
        boards[path.stem] = Board(path.stem, cfg["name"], cfg["march"], cfg["micropython"],
                                  cfg.get("micropython_board", ""), cfg.get("tls", ""),
                                  tuple(sorted(set(features))))
    if not boards:
        raise FirmwareError(f"no board files in {app / 'boards'}")
    return boards


def app_modules(app: Path) -> list[Path]:
    """The application's modules to compile: every top-level .py but boot, main and manifest."""
    return [p for p in sorted(app.glob("*.py")) if p.name not in SOURCE_FILES + NOT_SHIPPED]


def optional_modules(board: Board) -> list[str]:
    """The ucrumb modules (file names) ``board``'s bundle leaves out: those of features it does not ask for."""
    return sorted(m for f, mods in FEATURE_MODULES.items() if f not in board.features for m in mods)


def check_compiler(exe: str, micropython: str, native: bool, march: str) -> mpycompat.MpyHeader:
    """The header ``exe`` writes, if MicroPython ``micropython`` (on a ``march`` CPU) loads it;
    else FirmwareError saying what to do (mpycompat: the rule, from each release's loader)."""
    try:
        return mpycompat.check_mpy_cross(exe, micropython, native=native, board_arch=march)
    except (mpycompat.Incompatible, mpycompat.MpyCrossFailed, ValueError) as e:
        raise FirmwareError(f"{e}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(board: Board, app: Path, out: Path, *, micropython: str | None = None, emit: str = "bytecode",
          exe: str | None = None) -> Bundle:
    """Build ``board``'s bundle into out/<board.key> (replacing what is there)."""
    for name in SOURCE_FILES:
        if not (app / name).is_file():
            raise FirmwareError(f"{app} has no {name}: an application folder holds boot.py, main.py, "
                                "its modules and boards/*.toml")
    exe = exe or mpy_cross_exe()
    target = micropython or board.micropython
    native = emit == "native"
    header = check_compiler(exe, target, native, board.march)
    args = [f"-march={board.march}", "-X", "emit=native"] if native else []
    dest = out / board.key
    if dest.exists():
        shutil.rmtree(dest)
    lib = dest / "lib"
    compile_tree(ucrumb_dir(), lib / "ucrumb", args, exe, prefix="ucrumb/")
    for optional in optional_modules(board):  # compiled (so checked) either way, shipped on request
        (lib / "ucrumb" / optional).with_suffix(".mpy").unlink()
    for module in app_modules(app):
        compile_file(module, lib / module.with_suffix(".mpy").name, module.name, args, exe)
    for name in SOURCE_FILES + (CONFIG_TEMPLATE,):
        if (app / name).is_file():
            shutil.copyfile(app / name, dest / name)
    bundle = Bundle(board, dest, target, emit)
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        bundle.files.append({"path": rel, "size": path.stat().st_size, "sha256": _sha256(path)})
    manifest = {
        "board": board.key, "features": list(board.features), "micropython": target, "emit": emit, "march": board.march if native else None,
        "mpy_header": header.encode().hex(), "mpy_cross": mpy_cross_version(exe),
        "ucrumb": _ucrumb_version(), "files": bundle.files,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return bundle


def _ucrumb_version() -> str:
    import ucrumb

    return ucrumb.__version__


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """A built bundle's manifest.json, checked against the files beside it."""
    path = bundle_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        entries = {f["path"]: f for f in files}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FirmwareError(f"{bundle_dir} is not a bundle `crumb firmware build` made ({path}: {e})") from None
    for rel, f in entries.items():
        p = bundle_dir / rel
        if not p.is_file() or _sha256(p) != f.get("sha256"):
            raise FirmwareError(f"{p} does not match {path}: rebuild the bundle")
    return manifest
