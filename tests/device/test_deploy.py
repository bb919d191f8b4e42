"""`crumb firmware deploy` against a real MicroPython REPL, driven by the real mpremote.

The board is the MicroPython WebAssembly port's REPL on a pseudo-terminal
(tools/mpy/replpty.py, docs/micropython-vm.md): mpremote speaks its raw-REPL
protocol to it exactly as to /dev/ttyACM0. Behind it are the real issuer
(`crumb issuer serve`) and a verifying service, each behind a relay that
counts the bytes. After the deploy, the application runs from the deployed
files (lib/crumb_app.mpy, crumb.json, config.json) and its first authorized
call is recorded: issuer round trips and bytes on the wire.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from crumb.issuer import audit
from crumb.issuer.datadir import DataDir
from crumb.tooling.bench.device import DeviceIssuer, Relay, VerifyingService
from replpty import ReplPty

DEVICE = "dev-fw-0001"
WIFI_PASSWORD = "correct horse battery staple"


def crumb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False,
                          text=True, timeout=300)


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args], capture_output=True,
                          check=False, text=True, timeout=120)


def test_deploy_then_the_application_makes_its_first_authorized_call(tmp_path):
    with DeviceIssuer(devices={}) as issuer, Relay(issuer.port) as to_issuer, \
            VerifyingService(issuer.url) as service, Relay(service.httpd.server_address[1]) as to_service, \
            ReplPty(root=tmp_path / "flash") as board:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({
            "wifi": {"ssid": "lab", "password": WIFI_PASSWORD}, "url": f"{to_service.url}/sensors/{DEVICE}",
            "resource": f"/sensors/{DEVICE}", "operation": "publish", "every": 0, "watchdog_ms": 0,
            "timeout": 10, "batch": 4}))
        r = crumb("firmware", "deploy", "--port", board.path, "--device", DEVICE, "--group", "sensors",
                  "--config", str(config), "--data", str(issuer.data_dir), "--url", to_issuer.url)
        assert r.returncode == 0, r.stdout + r.stderr
        said = r.stdout + r.stderr
        assert "MicroPython 1.27" in said and f"enrolled {DEVICE}" in said and "match on the board" in said
        assert "next: mpremote connect" in said and "reset" in said

        # Secrets never appear in what the command prints.
        creds = json.loads((board.root / "crumb.json").read_text())
        assert creds["device_id"] == DEVICE and creds["issuer"] == to_issuer.url
        assert creds["key"] not in said and WIFI_PASSWORD not in said
        # The board holds exactly the bundle, the credentials and the settings.
        files = sorted(p.relative_to(board.root).as_posix() for p in board.root.rglob("*") if p.is_file())
        assert files == sorted(["boot.py", "main.py", "config.example.json", "config.json", "crumb.json",
                                "lib/crumb_app.mpy", "lib/hal.mpy", "lib/ucrumb/__init__.mpy",
                                "lib/ucrumb/cbor.mpy", "lib/ucrumb/client.mpy", "lib/ucrumb/http.mpy",
                                "lib/ucrumb/mac.mpy"])
        assert json.loads((board.root / "config.json").read_text())["wifi"]["password"] == WIFI_PASSWORD

        # The application, from the deployed files (the .mpy, not the checkout's sources).
        run = mpremote(board.path, "exec", "import sys\nimport crumb_app\n"
                       "print('@@from', crumb_app.__file__)\ncrumb_app.run(rounds=1)")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "@@from lib/crumb_app.mpy" in run.stdout or "@@from /lib/crumb_app.mpy" in run.stdout, run.stdout
        m = re.search(r"sent telemetry 200 +(\d+) (\d+)", run.stdout)
        assert m, run.stdout
        # A board without an RTC: the first request meets stale_time, the device takes the issuer's
        # time from that answer and asks again (2 round trips), then keeps it for every later call.
        trips = int(m.group(2))
        assert trips == 2 and service.accepted == 1 and not service.rejected
        issuer_bytes = sum(len(a) + len(b) for a, b in to_issuer.conns)
        service_bytes = sum(len(a) + len(b) for a, b in to_service.conns)
        print(f"\nfirst authorized call after deploy: {trips} issuer round trips, {issuer_bytes} B with the "
              f"issuer (HTTP, {len(to_issuer.conns)} connections), {service_bytes} B with the service")
        assert len(to_issuer.conns) == trips and 0 < issuer_bytes < 4096 and 0 < service_bytes < 2048

        # Every lifecycle step is in the audit log, next to the issuances, and the chains verify.
        logs = DataDir(issuer.data_dir).audit_logs()
        records = [rec.data for path in logs for rec in audit.records(path)]
        events = [(d["event"], d.get("device")) for d in records if d["event"] in ("enrolled", "deployed")]
        assert events == [("enrolled", DEVICE), ("deployed", DEVICE)]
        assert sum(d["event"] == "issued" and d["device"] == DEVICE for d in records) == 1
        assert len(logs) == 2 and all(audit.verify(p).ok for p in logs)  # the issuer's chain, and the CLI's


def test_deploy_again_keeps_the_key_and_refuses_a_bundle_the_board_cannot_load(tmp_path):
    with DeviceIssuer(devices={}) as issuer, ReplPty(root=tmp_path / "flash") as board:
        data = str(issuer.data_dir)
        first = crumb("firmware", "deploy", "--port", board.path, "--device", DEVICE, "--data", data)
        assert first.returncode == 0, first.stderr
        assert "no config.json" in first.stdout  # the next step says how to write one
        key = json.loads((board.root / "crumb.json").read_text())["key"]
        # A stale source copy would shadow the bundle's .mpy: deploy removes it.
        (board.root / "lib" / "hal.py").write_text("raise ImportError('stale')\n")
        again = crumb("firmware", "deploy", "--port", board.path, "--device", DEVICE, "--data", data)
        assert again.returncode == 0 and "credentials of enrolled" in again.stdout, again.stderr
        assert json.loads((board.root / "crumb.json").read_text())["key"] == key
        assert not (board.root / "lib" / "hal.py").exists()
        # Native code for another CPU: the board's loader would refuse it, so deploy does first.
        out = tmp_path / "native"
        assert crumb("firmware", "build", "--board", "rp2040", "--emit", "native", "--out", str(out)).returncode == 0
        r = crumb("firmware", "deploy", "--port", board.path, "--device", DEVICE, "--data", data,
                  "--bundle", str(out / "rp2040"))
        assert r.returncode == 1 and "cannot run on this board" in r.stderr, r.stderr
        # A bundle changed after it was built is refused before anything is copied.
        bundle = tmp_path / "bytecode"
        assert crumb("firmware", "build", "--board", "rp2040", "--out", str(bundle)).returncode == 0
        (bundle / "rp2040" / "lib" / "hal.mpy").write_bytes(b"M\x06\x00\x1f tampered")
        r = crumb("firmware", "deploy", "--port", board.path, "--device", DEVICE, "--data", data,
                  "--bundle", str(bundle / "rp2040"))
        assert r.returncode == 1 and "does not match" in r.stderr, r.stderr
        # No such port: one clear line, no traceback.
        r = crumb("firmware", "deploy", "--port", str(tmp_path / "nope"), "--device", DEVICE, "--data", data)
        assert r.returncode == 1 and "mpremote" in r.stderr and "Traceback" not in r.stderr, r.stderr
