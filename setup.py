"""Only for the issuer's optional native audit writer; everything else is in pyproject.toml.

crumb.issuer._native._commit (host/crumb/issuer/_native/commit.c) lets the
issuer's audit writer sign (libsodium), hash-chain and commit (SQLite) a
batch of tokens with the GIL released. It is crumb's only C, and it is
optional: it is built only on Linux (it wakes the event loop through an
eventfd) and only when the C compiler finds Python.h, sodium.h and
sqlite3.h (Debian: python3-dev, libsodium-dev, libsqlite3-dev). Anywhere
else crumb installs without it and the issuer does the same work in Python
(slower; the same tokens and the same log). At run time the loader
(crumb/issuer/_native/__init__.py) also checks that it uses the same SQLite
library as Python's sqlite3 module; `crumb issuer serve` says which audit
writer runs, and why.
"""

import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

HEADERS = ("Python.h", "sodium.h", "sqlite3.h")

NATIVE_WRITER = Extension(
    "crumb.issuer._native._commit", ["host/crumb/issuer/_native/commit.c"],
    libraries=["sodium", "sqlite3", "dl"],  # dl: dladdr/dlopen, in libc itself from glibc 2.34
    extra_compile_args=["-O2"], optional=True)


class BuildExt(build_ext):
    """Skips the native writer, saying why, when a header it needs is missing (not a compiler error)."""

    def build_extension(self, ext: Extension) -> None:
        if not self._compiles(""):
            print(f"crumb: not building {ext.name}: no working C compiler", file=sys.stderr)
            return
        missing = [h for h in HEADERS if not self._compiles(f"#include <{h}>\n")]
        if missing:
            print(f"crumb: not building {ext.name}: {', '.join(missing)} not found (Debian: python3-dev, "
                  "libsodium-dev, libsqlite3-dev); the issuer will use its Python audit writer", file=sys.stderr)
            return
        super().build_extension(ext)

    def _compiles(self, source: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(source)
            try:
                self.compiler.compile([path], output_dir=tmp)
            except CompileError:
                return False
        return True


setup(ext_modules=[NATIVE_WRITER] if sys.platform.startswith("linux") else [],
      cmdclass={"build_ext": BuildExt})
