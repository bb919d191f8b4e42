"""One simulation from start to report: services, proxy, fleet, faults, attacker, figures.

    summary, page = run(scenario, report_dir=Path("out"))

The run's clock starts when the devices may boot; ``sim_cpu_share`` compares
the CPU this process used from then until the devices are powered off (the
devices, the proxy, the attacker, the bookkeeping: everything the simulator
adds) with the CPU the services it started used over the same time
(``/proc``; services given by URL are not counted, and the share says so).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console

from .errors import SimError
from .events import Recorder
from .metrics import summarize
from .plan import Plan
from .scenario import Scenario, resolve

PACKAGES = ("crumb-auth", "cbor2", "pynacl", "uvicorn", "starlette", "httpx", "paho-mqtt", "redis", "rich",
            "adafruit-blinka", "adafruit-platformdetect")


def _versions(repo: Path, stack) -> dict[str, str]:
    v: dict[str, str] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import ucrumb

    v["ucrumb"] = ucrumb.__version__
    for name in ("crumb_app.py", "hal.py", "boot.py"):
        v[f"firmware/{name} sha256"] = hashlib.sha256((repo / "firmware" / name).read_bytes()).hexdigest()[:16]
    if shutil.which("git"):
        r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, check=False, text=True)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, check=False, text=True).stdout.strip()
            v["git"] = r.stdout.strip() + ("+changes" if dirty else "")
    v.update(stack.collect_versions())
    return v


class Faults:
    """Applies the scenario's faults and bursts at their times; knows which are active."""

    def __init__(self, sc: Scenario, plan: Plan, rec: Recorder, stack, fleet, proxy) -> None:
        self.sc, self.plan, self.rec = sc, plan, rec
        self.stack, self.fleet, self.proxy = stack, fleet, proxy
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sim-faults", daemon=True)
        self.active: list[str] = []

    def _timeline(self) -> list[tuple[float, int, Callable[[], None]]]:
        out: list[tuple[float, int, Callable[[], None]]] = []
        for i, f in enumerate(self.sc.faults):
            if f.kind == "issuer_outage":
                out.append((f.at, 0, lambda: self._outage(True)))
                out.append((f.end, 1, lambda: self._outage(False)))
            elif f.kind == "network":
                out.append((f.at, 0, lambda f=f: self._mark("network", "start", **f.link)))
                out.append((f.end, 1, lambda: self._mark("network", "end")))
            elif f.kind == "verifier_restart":
                out.append((f.at, 0, lambda f=f: self._restart(f.service)))
            elif f.kind == "redis_restart":
                out.append((f.at, 0, self._restart_redis))
            elif f.kind == "clock_jump":
                out.append((f.at, 0, lambda i=i, f=f: self._jump(self.plan.jumpers[i], f.jump)))
        for i, b in enumerate(self.sc.bursts):
            if b.kind == "reboot":
                out.append((b.at, 0, lambda i=i: self._reboot(self.plan.reboots.get(i, []))))
            else:
                out.append((b.at, 0, lambda: self._mark("burst:commands", "start")))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def _run(self) -> None:
        for at, _, action in self._timeline():
            if self.stop.wait(max(0.0, at - self.rec.now())):
                return
            action()

    def _mark(self, fault: str, phase: str, **detail: Any) -> None:
        self.rec.emit("fault", fault=fault, phase=phase, **detail)
        if phase == "start":
            self.active.append(fault)
        elif fault in self.active:
            self.active.remove(fault)

    def _outage(self, on: bool) -> None:
        (self.proxy.down.add if on else self.proxy.down.discard)("issuer")
        self._mark("issuer_outage", "start" if on else "end")

    def _restart(self, service: str) -> None:
        self._mark("verifier_restart", "start", service=service)
        try:
            away = self.stack.restart(service)
        except Exception as e:  # noqa: BLE001 - a restart that fails is part of the record, not a crash
            self.rec.emit("fault", fault="verifier_restart", phase="failed", service=service, error=str(e)[:200])
            return
        self._mark("verifier_restart", "end", service=service, away_s=round(away, 3))

    def _restart_redis(self) -> None:
        self._mark("redis_restart", "start")
        try:
            away = self.stack.restart_redis()
        except Exception as e:  # noqa: BLE001
            self.rec.emit("fault", fault="redis_restart", phase="failed", error=str(e)[:200])
            return
        self._mark("redis_restart", "end", away_s=round(away, 3))

    def _jump(self, devices: list[str], seconds: float) -> None:
        self.fleet.jump_clocks(devices, seconds)
        self.rec.emit("fault", fault="clock_jump", phase="start", devices=devices, jump=seconds)

    def _reboot(self, devices: list[str]) -> None:
        self.fleet.reboot(devices, "reboot burst")
        self.rec.emit("fault", fault="burst:reboot", phase="start", devices=len(devices))


def run(sc: Scenario, *, report_dir: Path, endpoints=None, console: Console | None = None,
        live: bool = True) -> tuple[dict[str, Any], Path]:
    from . import report
    from .attacker import Attacker
    from .fleet import Fleet, load_firmware
    from .progress import LiveView
    from .proxy import Proxy
    from .shims import SerialRouter
    from .stack import Stack, repo_root

    console = console or Console(highlight=False)
    resolve(sc)
    report.check_writable(report_dir)
    plan = Plan(sc)
    rec = Recorder()
    repo = repo_root()
    try:
        mods = load_firmware(repo / "firmware")
    except Exception as e:  # noqa: BLE001 - Blinka or the firmware cannot load: say so in one line
        raise SimError(f"the firmware could not be loaded for simulation: {type(e).__name__}: {e}") from None
    workdir = Path(tempfile.mkdtemp(prefix="crumb-sim-"))
    stack = Stack(sc, plan, workdir, rec, endpoints)
    real_stdout = sys.stdout
    fleet = None
    try:
        with console.status("[bold]starting the services[/]") as status:
            stack.start(lambda m: status.update(f"[bold]{m}[/]"))
        fleet_ref: list[Fleet] = []
        proxy = Proxy(rec, plan, lambda dev: fleet_ref[0].link_up(dev))
        fleet = Fleet(sc, plan, stack, proxy, rec, workdir, mods)
        fleet_ref.append(fleet)
        attacker = Attacker(plan, rec, stack.urls) if sc.attacker else None
        if attacker is not None:
            proxy.capture = attacker.on_http
            proxy.capture_mqtt = attacker.on_mqtt
        fleet.add_links()
        proxy.start()
        fleet.write_files()
        faults = Faults(sc, plan, rec, stack, fleet, proxy)
        console.print(f"[bold]crumb sim[/] {sc.name}: {sc.devices} devices for {sc.duration:g} s, seed {sc.seed}; "
                      f"issuer {stack.urls['issuer']}, services: "
                      + ", ".join(f"{k} {v}" for k, v in stack.urls.items() if k != "issuer"))
        sys.stdout = SerialRouter(real_stdout)  # each device's prints go to its own serial console
        cpu0 = os.times()
        svc0 = stack.cpu_seconds()
        wall0 = time.monotonic()
        rec.start()
        fleet.start()
        faults.thread.start()
        if attacker is not None:
            attacker.thread.start()
        view = LiveView(console, rec, sc.duration, sc.devices, lambda: list(faults.active))
        with view if live else _Null():
            while rec.now() < sc.duration:
                time.sleep(min(0.25, max(0.01, sc.duration - rec.now())))
        faults.stop.set()
        stuck = fleet.power_off()
        if attacker is not None:  # its last planned attempts, while the services are still up
            attacker.thread.join(60)
            attacker.stop.set()
        proxy.stop()
        faults.thread.join(30)
        cpu1 = os.times()
        svc1 = stack.cpu_seconds()
        measured = sorted(stack.pids())
        wall = time.monotonic() - wall0
        time.sleep(0.3 if sc.mqtt else 0)  # the MQTT consumer's last verdicts
    finally:
        sys.stdout = real_stdout
        if fleet is not None and not fleet.stopped:  # interrupted: power the devices off first
            fleet.power_off(5)
        stack.stop()
    sim_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    per_service = {k: round(v - svc0.get(k, 0.0), 3) for k, v in svc1.items()}
    services_cpu = sum(per_service.values())
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "scenario_file": sc.path,
        "seed": sc.seed,
        "devices": sc.devices,
        "duration": sc.duration,
        "batch": sc.batch,
        "events": len(rec.events),
        **summarize(rec.events, [d.id for d in plan.devices]),
        # None when the simulator started no service: there is nothing to compare with
        "sim_cpu_share": round(sim_cpu / (sim_cpu + services_cpu), 4) if measured and sim_cpu + services_cpu else None,
        "cpu": {"sim_seconds": round(sim_cpu, 3), "sim_user_seconds": round(cpu1.user - cpu0.user, 3),
                "sim_system_seconds": round(cpu1.system - cpu0.system, 3),
                "services_seconds": round(services_cpu, 3),
                "per_service": per_service, "wall_seconds": round(wall, 3), "cores": os.cpu_count(),
                "services_measured": measured,
                "note": "sim: this process from the first boot to power-off (devices, proxy, attacker, "
                        "bookkeeping); services: the processes it started, over the same time"},
        "devices_stuck_at_power_off": stuck,
        "schedule": plan.schedule(),
        "faults_applied": [e for e in rec.events if e["kind"] == "fault"],
        "services": dict(stack.urls),
        "versions": _versions(repo, stack),
    }
    serial = {d.p.id: d.ctx.serial for d in fleet.devices.values()} if fleet is not None else {}
    page = report.write(report_dir, summary, rec.events, list(plan.windows()), serial)
    shutil.rmtree(workdir, ignore_errors=True)
    return summary, page


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
