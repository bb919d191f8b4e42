"""Scenario files: what a simulation runs, as TOML, checked with line numbers.

    [run]        name, description, devices, duration (s), seed
    [services]   chain, commands, mqtt, redis, pop        (which real services run; pop: readings'
                 tokens are proof-of-possession tokens, the gateway their first hop)
    [device]     batch, transport, mqtt_share, timeout, watchdog_ms, clock_skew_ppm,
                 boot_spread, offline_at_boot, offline_for
    [workload]   telemetry_every, poll_every, commands_every
    [[workload.burst]]  at, kind ("reboot" | "commands"), share
    [network]    latency_ms, jitter_ms, drop, stall, reset   (every device link, the whole run)
    [[fault]]    kind, at, duration, and per kind: service, devices, jump, latency_ms, jitter_ms,
                 drop, stall, reset
    [attacker]   enabled, start, every, kinds

Times (``at``, ``duration``, ``start``) are seconds, or a share of the run
as text ("40%"), so a scenario keeps its shape under ``--duration``. Unknown
keys, values out of range and fault windows outside the run are errors that
name the file and line: a typo must never silently change what runs.
docs/simulator.md describes every setting.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...issuer.tomllines import Locator, dotted
from .errors import SimError

TRANSPORTS = ("http", "mqtt", "mixed")
FAULTS = ("issuer_outage", "network", "verifier_restart", "redis_restart", "clock_jump")
BURSTS = ("reboot", "commands")
ATTACKS = ("replay", "other_resource", "other_operation", "other_service", "skip_hop", "flip", "forge",
           "token_request_replay", "command_replay", "mqtt_replay")
RESTARTABLE = ("gateway", "ingest", "storage", "commands")


@dataclass
class Fault:
    kind: str
    at: float
    duration: float = 0.0
    service: str = "gateway"         # verifier_restart
    devices: int = 1                 # clock_jump: how many devices
    jump: float = 600.0              # clock_jump: seconds, either sign
    link: dict = field(default_factory=dict)  # network: latency_ms, jitter_ms, drop, stall, reset
    line: int | None = None

    @property
    def end(self) -> float:
        return self.at + self.duration


@dataclass
class Burst:
    kind: str
    at: float
    share: float = 1.0
    line: int | None = None


@dataclass
class Scenario:
    name: str = "scenario"
    description: str = ""
    path: str | None = None
    devices: int = 10
    duration: float = 20.0
    seed: int = 1
    # services
    chain: bool = True
    commands: bool = True
    mqtt: bool = False
    redis: bool = False
    pop: bool = False           # proof of possession on the readings' rule (first hop: the gateway)
    # devices
    batch: int = 4
    transport: str = "http"
    mqtt_share: float = 0.5
    timeout: float = 3.0
    watchdog_ms: int = 8000
    clock_skew_ppm: float = 50.0
    boot_spread: float = 2.0
    offline_at_boot: float = 0.0
    offline_for: float = 5.0
    verify_commands: bool = False  # devices verify each command's token themselves (ucrumb.verify)
    # workload
    telemetry_every: float = 2.0
    poll_every: float = 5.0
    commands_every: float = 3.0
    bursts: list[Burst] = field(default_factory=list)
    # the link, all run long
    link: dict = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    # attacker
    attacker: bool = False
    attack_start: float | str = "25%"
    attack_every: float = 1.0
    attack_kinds: list[str] = field(default_factory=list)
    # the line of each setting read from the file (for errors found after parsing)
    lines: dict = field(default_factory=dict, repr=False)


# -- value checks -----------------------------------------------------------------

def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("must be true or false")
    return v


def _int(lo: int, hi: int | None = None):
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError("must be an integer")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}")
        return v
    return check


def _num(lo: float, hi: float | None = None, *, above: bool = False):
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError("must be a number")
        if (v <= lo if above else v < lo) or (hi is not None and v > hi):
            if hi is not None:
                raise ValueError(f"must be between {lo} and {hi}")
            raise ValueError(f"must be > {lo}" if above else f"must be >= {lo}")
        return float(v)
    return check


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("must be a string")
    return v


def _choice(options: tuple[str, ...]):
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v
    return check


def _time(v: Any) -> float | str:
    """Seconds (>= 0), or a share of the run as '40%'."""
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("%"):
            try:
                pct = float(s[:-1])
            except ValueError:
                raise ValueError("must be seconds or a share of the run like '40%'") from None
            if not 0 <= pct <= 100:
                raise ValueError("a share of the run must be between 0% and 100%")
            return s
        raise ValueError("must be seconds or a share of the run like '40%'")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("must be seconds or a share of the run like '40%'")
    if v < 0:
        raise ValueError("must be >= 0 seconds")
    return float(v)


def _kinds(v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(k, str) for k in v):
        raise ValueError(f"must be a non-empty list of attack kinds ({', '.join(ATTACKS)})")
    bad = [k for k in v if k not in ATTACKS]
    if bad:
        raise ValueError(f"unknown attack kind {bad[0]!r} (known: {', '.join(ATTACKS)})")
    return list(v)


_LINK = {"latency_ms": _num(0, 10_000), "jitter_ms": _num(0, 10_000), "drop": _num(0, 1), "stall": _num(0, 1),
         "reset": _num(0, 1)}

# section -> key -> (attribute, check)
_SECTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "run": {"name": ("name", _text), "description": ("description", _text),
            "devices": ("devices", _int(1, 100_000)), "duration": ("duration", _num(0, above=True)),
            "seed": ("seed", _int(0))},
    "services": {"chain": ("chain", _bool), "commands": ("commands", _bool), "mqtt": ("mqtt", _bool),
                 "redis": ("redis", _bool), "pop": ("pop", _bool)},
    "device": {"batch": ("batch", _int(1, 32)), "transport": ("transport", _choice(TRANSPORTS)),
               "mqtt_share": ("mqtt_share", _num(0, 1)), "timeout": ("timeout", _num(0, 60, above=True)),
               "watchdog_ms": ("watchdog_ms", _int(0, 600_000)),
               "clock_skew_ppm": ("clock_skew_ppm", _num(0, 100_000)),
               "boot_spread": ("boot_spread", _num(0)), "offline_at_boot": ("offline_at_boot", _num(0, 1)),
               "offline_for": ("offline_for", _num(0)), "verify_commands": ("verify_commands", _bool)},
    "workload": {"telemetry_every": ("telemetry_every", _num(0, above=True)),
                 "poll_every": ("poll_every", _num(0)), "commands_every": ("commands_every", _num(0))},
    "attacker": {"enabled": ("attacker", _bool), "start": ("attack_start", _time),
                 "every": ("attack_every", _num(0, above=True)), "kinds": ("attack_kinds", _kinds)},
}
_BURST = {"at": _time, "kind": _choice(BURSTS), "share": _num(0, 1)}
_FAULT = {"kind": _choice(FAULTS), "at": _time, "duration": _time, "service": _choice(RESTARTABLE),
          "devices": _int(1), "jump": _num(-500_000, 500_000), **_LINK}
_FAULT_KEYS = {"issuer_outage": {"duration"}, "network": {"duration", *_LINK},
               "verifier_restart": {"service"}, "redis_restart": set(), "clock_jump": {"devices", "jump"}}


class _Checker:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.where = Locator(text)

    def fail(self, keys: tuple, message: str) -> SimError:
        line = self.where.line_of(keys)
        at = f"{self.path}:{line}" if line else self.path
        return SimError(f"{at}: {dotted(keys)}: {message}" if keys else f"{at}: {message}")

    def value(self, keys: tuple, check, v: Any) -> Any:
        try:
            return check(v)
        except (TypeError, ValueError) as e:  # the checks: TypeError for a wrong type, ValueError for a bad value
            raise self.fail(keys, str(e)) from None

    def table(self, keys: tuple, v: Any) -> dict:
        if not isinstance(v, dict):
            raise self.fail(keys, "must be a table")
        return v


def parse(text: str, path: str = "<scenario>") -> Scenario:
    """A Scenario from TOML text; SimError (with ``path:line``) for anything wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))  # tomllib says where in its message
        msg = str(e).split(" (at line")[0]
        raise SimError(f"{path}:{m.group(1)}: {msg}" if m else f"{path}: {e}") from None
    c = _Checker(path, text)
    sc = Scenario(path=path, name=Path(path).stem if path != "<scenario>" else "scenario")
    for section, body in doc.items():
        if section == "fault":
            continue
        if section not in _SECTIONS and section != "network":
            raise c.fail((section,), f"unknown section (known: {', '.join([*_SECTIONS, 'network', 'fault'])})")
        body = c.table((section,), body)
        if section == "network":
            for key, v in body.items():
                if key not in _LINK:
                    raise c.fail((section, key), f"unknown setting (known: {', '.join(_LINK)})")
                sc.link[key] = c.value((section, key), _LINK[key], v)
            continue
        known = _SECTIONS[section]
        for key, v in body.items():
            if section == "workload" and key == "burst":
                continue
            if key not in known:
                extra = ", burst" if section == "workload" else ""
                raise c.fail((section, key), f"unknown setting (known: {', '.join(known)}{extra})")
            attr, check = known[key]
            setattr(sc, attr, c.value((section, key), check, v))
            sc.lines[attr] = c.where.line_of((section, key))
    for i, b in enumerate(_array(c, doc.get("workload", {}).get("burst", []), ("workload", "burst"))):
        keys = ("workload", "burst", i)
        for key in b:
            if key not in _BURST:
                raise c.fail(keys + (key,), f"unknown setting (known: {', '.join(_BURST)})")
        if "at" not in b or "kind" not in b:
            raise c.fail(keys, "a burst needs 'at' and 'kind'")
        sc.bursts.append(Burst(kind=c.value(keys + ("kind",), _BURST["kind"], b["kind"]),
                               at=c.value(keys + ("at",), _time, b["at"]),
                               share=c.value(keys + ("share",), _BURST["share"], b.get("share", 1.0)),
                               line=c.where.line_of(keys)))
    for i, f in enumerate(_array(c, doc.get("fault", []), ("fault",))):
        keys = ("fault", i)
        if "kind" not in f or "at" not in f:
            raise c.fail(keys, "a fault needs 'kind' and 'at'")
        kind = c.value(keys + ("kind",), _FAULT["kind"], f["kind"])
        allowed = {"kind", "at"} | _FAULT_KEYS[kind]
        for key in f:
            if key not in _FAULT:
                raise c.fail(keys + (key,), f"unknown setting (known: {', '.join(_FAULT)})")
            if key not in allowed:
                raise c.fail(keys + (key,), f"not a setting of a {kind} fault (it takes: "
                                            f"{', '.join(sorted(allowed))})")
        if "duration" in _FAULT_KEYS[kind] and "duration" not in f:
            raise c.fail(keys, f"a {kind} fault needs a 'duration'")
        fault = Fault(kind=kind, at=c.value(keys + ("at",), _time, f["at"]),
                      duration=c.value(keys + ("duration",), _time, f.get("duration", 0.0)),
                      line=c.where.line_of(keys))
        if "service" in f:
            fault.service = c.value(keys + ("service",), _FAULT["service"], f["service"])
        if "devices" in f:
            fault.devices = c.value(keys + ("devices",), _FAULT["devices"], f["devices"])
        if "jump" in f:
            fault.jump = c.value(keys + ("jump",), _FAULT["jump"], f["jump"])
        for key, check in _LINK.items():
            if key in f:
                fault.link[key] = c.value(keys + (key,), check, f[key])
        sc.faults.append(fault)
    return sc


def _array(c: _Checker, v: Any, keys: tuple) -> list[dict]:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise c.fail(keys, "must be an array of tables ([[...]])")
    return v


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; SimError for an unreadable or malformed one."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SimError(f"cannot read scenario {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SimError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path))


def _seconds(v: float | str, duration: float) -> float:
    return duration * float(v[:-1]) / 100 if isinstance(v, str) else float(v)


def resolve(sc: Scenario) -> Scenario:
    """Turn shares of the run into seconds, then check every window lies within the run.

    Called once the run's duration is final (after ``--duration``); errors
    name the scenario's line.
    """
    d = sc.duration
    sc.attack_start = _seconds(sc.attack_start, d)
    for b in sc.bursts:
        b.at = _seconds(b.at, d)
        if b.at > d:
            raise SimError(f"{_at(sc, b.line)}: burst at {b.at:g} s is outside the run (0–{d:g} s)")
    for f in sc.faults:
        f.at = _seconds(f.at, d)
        f.duration = _seconds(f.duration, d)
        if f.at > d or f.at + f.duration > d + 1e-9:
            window = f"{f.at:g}–{f.at + f.duration:g} s" if f.duration else f"at {f.at:g} s"
            raise SimError(f"{_at(sc, f.line)}: {f.kind} fault window {window} is outside the run (0–{d:g} s)")
        if f.kind == "redis_restart" and not sc.redis:
            raise SimError(f"{_at(sc, f.line)}: a redis_restart fault needs [services] redis = true")
        if f.kind == "verifier_restart" and f.service == "commands" and not sc.commands:
            raise SimError(f"{_at(sc, f.line)}: verifier_restart of 'commands' needs [services] commands = true")
        if f.kind == "verifier_restart" and f.service != "commands" and not sc.chain:
            raise SimError(f"{_at(sc, f.line)}: verifier_restart of '{f.service}' needs [services] chain = true")
        if f.kind == "clock_jump" and f.devices > sc.devices:
            f.devices = sc.devices
    if sc.attack_start > d:
        raise SimError(f"{_at(sc, sc.lines.get('attack_start'))}: attacker.start {sc.attack_start:g} s is "
                       f"outside the run (0–{d:g} s)")
    if sc.transport != "http" and not sc.mqtt:
        raise SimError(f"{_at(sc, sc.lines.get('transport'))}: device.transport '{sc.transport}' needs "
                       "[services] mqtt = true")
    if "mqtt_replay" in sc.attack_kinds and not sc.mqtt:
        raise SimError(f"{_at(sc, sc.lines.get('attack_kinds'))}: attacker.kinds: mqtt_replay needs "
                       "[services] mqtt = true")
    return sc


def _at(sc: Scenario, line: int | None) -> str:
    where = sc.path or "<scenario>"
    return f"{where}:{line}" if line else where
