"""The simulated devices, each the real firmware in a thread, and the operator's console.

A device is ``firmware/boot.py`` then ``firmware/crumb_app.py``'s ``App`` with
``firmware/hal.py`` on Blinka's OS-agnostic board, and ``ucrumb``, all
imported once and run unmodified; what differs between devices lives in
their objects, their files (config.json, crumb.json in the device's own
folder, as on a board's flash) and their shims (``shims.DeviceContext``: its
clock, watchdog, Wi-Fi and serial console).

The fleet powers each device on at its planned boot time, reboots it when
the simulator resets it (the watchdog was not fed in time, a reboot burst,
a crash with the watchdog running) and powers everything off at the end.
The application's ``log`` becomes events (``events``): that is how the
report knows what each call did and whether its token came from the cache.

The console is the operator: a ucrumb client of its own (enrolled in the
``operators`` group) that sends the plan's commands to the command service.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from . import shims
from .events import Recorder
from .plan import CONSOLE, Plan, Profile
from .proxy import Link, Proxy
from .scenario import Scenario
from .stack import Stack

# Blinka's OS-agnostic board: real board/digitalio/analogio objects on a machine with no pins.
BLINKA_ENV = {"BLINKA_FORCEBOARD": "OS_AGNOSTIC_BOARD", "BLINKA_FORCECHIP": "OS_AGNOSTIC"}
HAL = {"sensor": {"pin": "Ax_INPUT_WAVE_SINE", "scale": 0.05, "offset": 21.0},  # sine -100..100 -> 16..26 C
       "contact": {"pin": "Dx_INPUT_TOGGLE"},
       "actuator": {"pin": "Dx_OUTPUT"}}


def load_firmware(firmware: Path) -> dict[str, Any]:
    """Install the shims, point Blinka at its OS-agnostic board, import boot, crumb_app and hal."""
    os.environ.update(BLINKA_ENV)
    shims.install()
    path = str(firmware)
    if path not in sys.path:
        sys.path.insert(0, path)
    mods = {name: importlib.import_module(name) for name in ("hal", "boot", "crumb_app")}
    import board  # noqa: F401 - fail here, once, if Blinka cannot find its board

    return mods


class SimDevice:
    def __init__(self, profile: Profile, fleet: Fleet) -> None:
        self.p = profile
        self.fleet = fleet
        self.rec = fleet.rec
        self.ctx = shims.DeviceContext(profile.id, profile.uid, profile.skew_ppm,
                                       link_up=lambda: fleet.link_up(profile.id))
        self.dir = fleet.workdir / "devices" / profile.id
        self.links: dict[str, Link] = {}
        self.boots = 0
        self.thread = threading.Thread(target=self._run, name=f"dev:{profile.id}", daemon=True)
        self.app: Any = None

    # -- files on its "flash" --------------------------------------------------------------
    def write_files(self, creds: dict, sc: Scenario, broker_port: int | None,
                    command_keys: list[str] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        me = self.p.id
        cfg: dict[str, Any] = {
            "wifi": {"ssid": "crumb-sim", "password": "simulated"},
            "resource": f"/sensors/{me}", "operation": "publish", "every": sc.telemetry_every,
            "transport": self.p.transport, "timeout": sc.timeout, "watchdog_ms": sc.watchdog_ms,
            "batch": sc.batch, "command_max_age": 60, "hal": HAL,
        }
        if "gateway" in self.links:
            cfg["service"] = self.links["gateway"].url
        if self.p.transport == "mqtt" and "mqtt" in self.links:
            cfg["mqtt"] = {"host": "127.0.0.1", "port": self.links["mqtt"].port, "topic": f"telemetry/{me}"}
        if "commands" in self.links and sc.poll_every > 0:
            cfg["commands"] = self.links["commands"].url
            cfg["poll_every"] = sc.poll_every
            if command_keys:  # pinned at provisioning, as a board's config.json would carry them
                cfg["command_keys"] = command_keys
        (self.dir / "config.json").write_text(json.dumps(cfg, indent=1))
        (self.dir / "crumb.json").write_text(json.dumps({**creds, "issuer": self.links["issuer"].url}))

    # -- its life ---------------------------------------------------------------------------
    def log(self, event: str, *args: Any) -> None:
        """The application's log: one event per line it would print on a board."""
        me = self.p.id
        if event == "sent":
            what, status, code, ms, trips = args
            self.rec.emit("call", device=me, what=what, transport="http", status=status, code=code or "",
                          ms=ms, trips=trips)
            self.rec.bump("calls_ok" if status < 400 else "calls_refused")
        elif event == "published":
            what, ms, trips = args
            self.rec.emit("call", device=me, what=what, transport="mqtt", status=0, code="sent", ms=ms, trips=trips)
        elif event == "command":
            seq, op, verdict = args
            self.rec.emit("device", device=me, what="command", seq=seq, op=op, verdict=verdict)
        elif event in ("no_token", "denied"):
            self.rec.emit("device", device=me, what=event, call=args[0], code=args[1])
        elif event == "unreachable":
            self.rec.emit("device", device=me, what=event, call=args[0], target=args[1], message=str(args[2])[:120])
        else:
            self.rec.emit("device", device=me, what=event, detail=[str(a) for a in args])

    def _run(self) -> None:
        ctx = self.ctx
        shims.bind(ctx)
        mods = self.fleet.mods
        if ctx.stop.wait(max(0.0, self.p.boot_at - self.rec.now())):
            return
        while not ctx.stop.is_set():
            ctx.boot()
            self.boots += 1
            self.rec.emit("device", device=self.p.id, what="power_on", boot=self.boots)
            self.app = None
            try:
                mods["boot"].wifi(timeout_ms=20000, config=str(self.dir / "config.json"))
                with open(self.dir / "config.json") as f:
                    cfg = json.load(f)
                self.app = mods["crumb_app"].App(cfg, str(self.dir / "crumb.json"), log=self.log)
                self.app.loop()
            except shims.PowerOff:
                break
            except shims.Reset as r:
                self.rec.emit("device", device=self.p.id, what="reset", why=str(r))
                continue
            except Exception as e:  # noqa: BLE001 - a crash of the application: the watchdog resets the chip
                ctx.serial.append(traceback.format_exc())
                self.rec.emit("device", device=self.p.id, what="crash", error=repr(e)[:200])
                wait = ctx.wdt_timeout
                if wait is None:  # no watchdog: the board would sit at the REPL until power-cycled
                    ctx.stop.wait()
                    break
                if ctx.stop.wait(max(0.0, wait - (time.monotonic() - ctx.wdt_fed))):
                    break
            finally:
                if self.app is not None:
                    with contextlib.suppress(Exception):  # the run is over; a failing close changes nothing
                        self.app.close()


class Console:
    """The operator: sends the plan's commands to the command service with tokens of its own."""

    def __init__(self, fleet: Fleet, links: dict[str, Link], creds: dict) -> None:
        self.fleet = fleet
        self.rec = fleet.rec
        self.links = links
        self.creds = creds
        self.ctx = shims.DeviceContext(CONSOLE, b"console", 0.0)
        self.thread = threading.Thread(target=self._run, name="sim-console", daemon=True)

    def _run(self) -> None:
        from ucrumb import http
        from ucrumb.client import Client, CrumbError

        shims.bind(self.ctx)
        client = Client(self.links["issuer"].url, self.creds["device_id"], bytes.fromhex(self.creds["key"]),
                        batch=1, timeout=3)
        base = self.links["commands"].url
        verify = self.fleet.sc.verify_commands
        for_device: dict[str, Client] = {}  # with verify_commands: one client per audience (the device)
        for cmd in self.fleet.plan.commands:
            if self.ctx.stop.wait(max(0.0, cmd.at - self.rec.now())):
                return
            res = f"/valves/{cmd.device}"
            try:
                body = b""
                if verify:  # the device's own token for this command (PROTOCOL.md §7.1)
                    if cmd.device not in for_device:
                        for_device[cmd.device] = Client(self.links["issuer"].url, self.creds["device_id"],
                                                        bytes.fromhex(self.creds["key"]), batch=1, timeout=3,
                                                        audience=cmd.device)
                    body = json.dumps({"token": for_device[cmd.device].token(res, cmd.op).hex()}).encode()
                auth = client.header(res, cmd.op)
                status, _, body = http.request("POST", f"{base}{res}/{cmd.op}", body,
                                               {"Authorization": auth, "Content-Type": "application/json"}, 3)
            except CrumbError as e:
                self.rec.emit("command_sent", device=cmd.device, op=cmd.op, status=0, code=e.code)
                continue
            except OSError as e:
                self.rec.emit("command_sent", device=cmd.device, op=cmd.op, status=0, code="unreachable",
                              message=str(e)[:120])
                continue
            code, seq = "", None
            try:
                doc = json.loads(body)
                code, seq = doc.get("code", ""), doc.get("queued")
            except ValueError:
                pass
            self.rec.emit("command_sent", device=cmd.device, op=cmd.op, status=status, code=code, seq=seq)


class Fleet:
    def __init__(self, sc: Scenario, plan: Plan, stack: Stack, proxy: Proxy, rec: Recorder, workdir: Path,
                 mods: dict[str, Any]) -> None:
        self.sc = sc
        self.plan = plan
        self.stack = stack
        self.proxy = proxy
        self.rec = rec
        self.workdir = workdir
        self.mods = mods
        self.devices = {p.id: SimDevice(p, self) for p in plan.devices}
        self.console: Console | None = None
        self._offline_until = {p.id: p.offline_until for p in plan.devices}
        self.stopped = False
        self._watchdog = threading.Thread(target=self._watch, name="sim-watchdog", daemon=True)

    def link_up(self, device: str) -> bool:
        return not self.stopped and self.rec.now() >= self._offline_until.get(device, 0.0)

    def add_links(self) -> None:
        """One proxy link per device and service (call before the proxy starts)."""
        urls = self.stack.urls

        def target(url: str) -> tuple[str, int]:
            host, _, port = url.split("://", 1)[-1].rstrip("/").rpartition(":")
            return host, int(port)

        for d in self.devices.values():
            d.links["issuer"] = self.proxy.add(d.p.id, "issuer", target(urls["issuer"]))
            if "gateway" in urls:
                d.links["gateway"] = self.proxy.add(d.p.id, "gateway", target(urls["gateway"]))
            if "commands" in urls and self.sc.commands:
                d.links["commands"] = self.proxy.add(d.p.id, "commands", target(urls["commands"]))
            if d.p.transport == "mqtt":
                d.links["mqtt"] = self.proxy.add(d.p.id, "mqtt", target("tcp://" + urls["broker"]), mqtt=True)
        if self.plan.commands and CONSOLE in self.stack.creds:
            links = {"issuer": self.proxy.add(CONSOLE, "issuer", target(urls["issuer"]), faulty=False),
                     "commands": self.proxy.add(CONSOLE, "commands", target(urls["commands"]), faulty=False)}
            self.console = Console(self, links, self.stack.creds[CONSOLE])

    def write_files(self) -> None:
        keys = self.issuer_keys() if self.sc.verify_commands and self.sc.commands else None
        for d in self.devices.values():
            d.write_files(self.stack.creds[d.p.id], self.sc, None, keys)

    def issuer_keys(self) -> list[str]:
        """The issuer's public keys (hex), from its GET /keys: what a device is provisioned with."""
        from ...services.keyfetch import FetchedKeys

        fetched = FetchedKeys(self.stack.urls["issuer"] + "/keys")
        try:
            return [k.raw.hex() for k in fetched.fetch().issuer.values()]
        finally:
            fetched.close()

    def start(self) -> None:
        for d in self.devices.values():
            d.thread.start()
        if self.console is not None:
            self.console.thread.start()
        self._watchdog.start()

    def _watch(self) -> None:
        # The watchdogs: a device that has not fed its WDT within the timeout is reset.
        while not self.stopped:
            now = time.monotonic()
            for d in self.devices.values():
                c = d.ctx
                if c.wdt_timeout is not None and not c.reset_pending and now - c.wdt_fed > c.wdt_timeout:
                    c.reset_pending = "watchdog"
                    self.rec.emit("device", device=d.p.id, what="watchdog", late_s=round(now - c.wdt_fed, 2))
            time.sleep(0.25)

    # -- faults and bursts -----------------------------------------------------------------
    def jump_clocks(self, devices: list[str], seconds: float) -> None:
        for dev in devices:
            self.devices[dev].ctx.jump_ms += int(seconds * 1000)

    def reboot(self, devices: list[str], why: str) -> None:
        for dev in devices:
            self.devices[dev].ctx.reset_pending = why

    # -- the end ---------------------------------------------------------------------------
    def power_off(self, timeout: float = 15.0) -> list[str]:
        """Power every device off; returns those whose thread did not end within ``timeout`` s."""
        self.stopped = True
        for d in self.devices.values():
            d.ctx.stop.set()
        if self.console is not None:
            self.console.ctx.stop.set()
        deadline = time.monotonic() + timeout
        stuck = []
        for d in self.devices.values():
            d.thread.join(max(0.0, deadline - time.monotonic()))
            if d.thread.is_alive():
                stuck.append(d.p.id)
        if self.console is not None:
            self.console.thread.join(max(0.0, deadline - time.monotonic()))
        self._watchdog.join(1)
        return stuck
