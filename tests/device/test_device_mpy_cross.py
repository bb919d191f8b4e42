"""Every module under device/ must compile with mpy-cross; report the footprint."""

import pytest

import mpyvm

# The whole device client must fit in 16 KiB of .mpy (docs/device.md: what a
# 2 MB-flash board can spare beside the firmware and the application); the codec
# part (cbor + mac + package init) is held to a few KB of that.
CLIENT_BUDGET = 16 * 1024
CODEC_BUDGET = 4 * 1024
CODEC = ("ucrumb/__init__.mpy", "ucrumb/cbor.mpy", "ucrumb/mac.mpy")
# Optional modules (crumb.tooling.firmware.bundle.FEATURE_MODULES), each imported only when its feature
# is used and shipped only to boards that ask: outside the client's budget, each within its own.
OPTIONAL_BUDGET = {"ucrumb/coap.mpy": 4 * 1024, "ucrumb/aesccm.mpy": 4 * 1024,
                   # on-device verification ("verify"): 14.1 KB in all, counted on top of a board's budget
                   "ucrumb/verify.mpy": 10 * 1024, "ucrumb/ed25519.mpy": 3 * 1024, "ucrumb/sha512.mpy": 2 * 1024,
                   "ucrumb/pop.mpy": 2 * 1024}


def _compile(tmp_path):
    try:
        return mpyvm.compile_tree(mpyvm.DEVICE_DIR, tmp_path)
    except mpyvm.MpyCrossError as e:
        pytest.fail(str(e), pytrace=False)


def test_every_device_module_compiles(tmp_path):
    sizes = _compile(tmp_path)
    py = sorted(p.relative_to(mpyvm.DEVICE_DIR).with_suffix(".mpy").as_posix() for p in mpyvm.DEVICE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    assert sorted(sizes) == py
    for m in CODEC:
        assert m in sizes


def test_mpy_size_budget(tmp_path):
    sizes = _compile(tmp_path)
    codec = sum(sizes[m] for m in CODEC)
    total = sum(v for k, v in sizes.items() if k not in OPTIONAL_BUDGET)
    print("mpy sizes:", sizes, "codec:", codec, "total:", total)
    assert codec <= CODEC_BUDGET, sizes
    assert total <= CLIENT_BUDGET, sizes
    for m, budget in OPTIONAL_BUDGET.items():
        assert sizes[m] <= budget, (m, sizes[m])


def test_optional_modules_are_the_bundles():
    from crumb.tooling.firmware.bundle import FEATURE_MODULES

    assert {f"ucrumb/{m[:-3]}.mpy" for ms in FEATURE_MODULES.values() for m in ms} == set(OPTIONAL_BUDGET)


def test_mpy_sizes_helper():
    sizes, total = mpyvm.mpy_sizes()
    assert total == sum(sizes.values()) > 0


def test_mpy_cross_rejects_what_micropython_cannot_compile(tmp_path):
    # `match` is valid CPython 3.10 but not MicroPython: the check must catch it.
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "ok.py").write_text("x = 1\n")
    (src / "bad.py").write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    with pytest.raises(mpyvm.MpyCrossError, match=r"pkg/bad\.py"):
        mpyvm.compile_tree(src.parent, tmp_path / "out")


def test_mip_package_json_lists_every_module():
    # device/package.json is what `mip install` reads; URLs are relative to it.
    import json

    pj = json.loads((mpyvm.DEVICE_DIR / "package.json").read_text())
    listed = sorted(target for target, _ in pj["urls"])
    py = sorted(p.relative_to(mpyvm.DEVICE_DIR).as_posix() for p in mpyvm.DEVICE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    assert listed == py, "device/package.json out of date"
    for target, url in pj["urls"]:
        assert (mpyvm.DEVICE_DIR / url).is_file(), url
    assert "version" not in pj  # the version lives in ucrumb.__version__ only (mip does not need one)
