"""Everything the seed decides, decided before the run starts.

For one scenario and one seed the plan is the same on every run: each
device's boot time, clock skew, unique id, transport and offline window; the
fault windows and which devices' clocks jump; the operator's commands and
the bursts; the attacker's attempts (time, kind, victim). Each comes from its
own random stream (``random.Random("crumb-sim/SEED/WHAT")``), so adding
devices does not reshuffle the faults. What happens to one connection on a
faulty link is drawn from a stream named by (device, service, connection
number), so it too is the same whenever that connection is the same.

``Plan.schedule()`` is the plan as JSON: it goes into summary.json, and two
runs with the same seed have the same one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .scenario import ATTACKS, Scenario

CONSOLE = "console-1"  # the operator who sends commands (enrolled in the "operators" group)


def stream(seed: int, what: str) -> random.Random:
    return random.Random(f"crumb-sim/{seed}/{what}")


@dataclass
class Profile:
    """One simulated device."""

    index: int
    id: str
    uid: bytes
    boot_at: float          # seconds into the run
    skew_ppm: float         # its ticks run this much fast (+) or slow (-)
    transport: str          # "http" or "mqtt"
    offline_until: float    # its Wi-Fi is down from boot until then (0: online at boot)


@dataclass
class Command:
    at: float
    device: str
    op: str


@dataclass
class Attempt:
    at: float
    kind: str
    victim: str             # the device (or "console") whose traffic it uses


# what each attack needs running, the service it goes to, and the code it must be refused with
ATTACK_SPEC: dict[str, tuple[str, str, str, str]] = {
    # kind: (needs, target, expected code, what)
    "replay": ("chain", "gateway", "replayed", "a captured reading token sent again to the gateway"),
    "other_resource": ("chain", "gateway", "scope_denied", "a captured token used for another sensor"),
    "other_operation": ("commands", "commands", "scope_denied",
                        "a device's captured poll token (read) used to open its valve"),
    "other_service": ("chain", "archive", "chain_invalid", "a captured token at a service outside its chain"),
    "skip_hop": ("chain", "ingest", "chain_incomplete", "a captured token sent straight to ingest"),
    "flip": ("chain", "gateway", "bad_signature", "a captured token with one byte of its signature flipped"),
    "forge": ("chain", "gateway", "unknown_key", "the same claims signed with the attacker's own key"),
    "token_request_replay": ("", "issuer", "replayed", "a device's captured POST /token sent again"),
    "command_replay": ("commands", "commands", "replayed", "the operator's captured command sent again"),
    "mqtt_replay": ("mqtt", "mqtt", "replayed", "a device's captured MQTT envelope published again"),
}
assert set(ATTACK_SPEC) == set(ATTACKS)

# With proof of possession ([services] pop = true) the attacker also has the captured proof, and
# every use it makes of a captured reading token is refused for want of a proof of its own: at the
# gateway (another body, another sensor), at a service that cannot read the token's key.
POP_ATTACKS = {"replay": "the captured token and proof sent again with the attacker's own reading",
               "other_resource": "the captured token and proof used for another sensor",
               "other_service": "the captured token and proof at a service outside its chain",
               "skip_hop": "the captured token and proof sent straight to ingest"}
POP_CODE = "pop_failed"


def expected_code(sc: Scenario, kind: str) -> str:
    """The code an attempt of ``kind`` must be refused with in scenario ``sc``."""
    return POP_CODE if sc.pop and kind in POP_ATTACKS else ATTACK_SPEC[kind][2]


def attack_kinds(sc: Scenario) -> list[str]:
    """The kinds this scenario's attacker tries: its list, else every kind its services allow."""
    have = {"": True, "chain": sc.chain, "commands": sc.commands, "mqtt": sc.mqtt}
    if sc.attack_kinds:
        return list(sc.attack_kinds)
    kinds = [k for k in ATTACKS if have[ATTACK_SPEC[k][0]]]
    if sc.transport == "http":
        kinds = [k for k in kinds if k != "mqtt_replay"]
    return kinds


class Plan:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.seed = sc.seed
        self.devices = self._devices()
        ids = [d.id for d in self.devices]
        self.jumpers: dict[int, list[str]] = {}
        rng = stream(sc.seed, "faults")
        for i, f in enumerate(sc.faults):
            if f.kind == "clock_jump":
                self.jumpers[i] = sorted(rng.sample(ids, min(f.devices, len(ids))))
        self.reboots: dict[int, list[str]] = {}
        self.commands = self._commands(ids)
        self.attempts = self._attempts() if sc.attacker else []

    # -- devices ----------------------------------------------------------------------
    def _devices(self) -> list[Profile]:
        sc = self.sc
        n = sc.devices
        rng = stream(sc.seed, "devices")
        width = max(4, len(str(n)))
        ids = [f"dev-{i + 1:0{width}d}" for i in range(n)]
        offline = set(rng.sample(range(n), round(sc.offline_at_boot * n)))
        if sc.transport == "mixed":
            mqtt = set(rng.sample(range(n), round(sc.mqtt_share * n)))
        else:
            mqtt = set(range(n)) if sc.transport == "mqtt" else set()
        out = []
        for i in range(n):
            boot = rng.uniform(0, sc.boot_spread)
            skew = rng.uniform(-sc.clock_skew_ppm, sc.clock_skew_ppm)
            uid = rng.randbytes(6)
            down = boot + sc.offline_for * rng.uniform(0.5, 1.5) if i in offline else 0.0
            out.append(Profile(i, ids[i], uid, round(boot, 3), round(skew, 2), "mqtt" if i in mqtt else "http",
                               round(min(down, sc.duration), 3)))
        return out

    # -- workload ----------------------------------------------------------------------
    def _commands(self, ids: list[str]) -> list[Command]:
        sc = self.sc
        rng = stream(sc.seed, "commands")
        out = []
        if sc.commands and sc.commands_every > 0:
            t = min(1.0, sc.duration / 2)
            while t < sc.duration - 0.5:
                out.append(Command(round(t, 3), rng.choice(ids), rng.choice(("open", "close"))))
                t += sc.commands_every
        brng = stream(sc.seed, "bursts")
        for i, b in enumerate(sc.bursts):
            chosen = sorted(brng.sample(ids, round(b.share * len(ids))))
            if b.kind == "commands":
                if sc.commands:
                    out += [Command(round(b.at, 3), d, "close") for d in chosen]
            else:
                self.reboots[i] = chosen
        out.sort(key=lambda c: (c.at, c.device))
        return out

    def _attempts(self) -> list[Attempt]:
        sc = self.sc
        kinds = attack_kinds(sc)
        if not kinds:
            return []
        rng = stream(sc.seed, "attacker")
        http = [d.id for d in self.devices if d.transport == "http" and not d.offline_until]
        mqtt = [d.id for d in self.devices if d.transport == "mqtt" and not d.offline_until]
        # Devices whose clocks jump are spared: their refusals are the fault's, not the attacker's.
        jumped = {d for ds in self.jumpers.values() for d in ds}
        http = [d for d in http if d not in jumped] or http
        mqtt = [d for d in mqtt if d not in jumped] or mqtt
        out: list[Attempt] = []
        order: list[str] = []
        t = sc.attack_start
        end = sc.duration - max(1.0, 0.05 * sc.duration)
        while t < end:
            if not order:  # every kind once per round, in a seeded order
                order = list(kinds)
                rng.shuffle(order)
            kind = order.pop()
            if kind == "command_replay":
                victim = CONSOLE
            elif kind == "mqtt_replay":
                victim = rng.choice(mqtt) if mqtt else "none"
            else:
                victim = rng.choice(http) if http else "none"
            out.append(Attempt(round(t, 3), kind, victim))
            t += sc.attack_every
        return out

    def rename(self, ids: dict[str, str]) -> None:
        """Give the devices other ids (those enrolled on an issuer the simulator did not start)."""
        for d in self.devices:
            d.id = ids.get(d.id, d.id)
        for c in self.commands:
            c.device = ids.get(c.device, c.device)
        for a in self.attempts:
            a.victim = ids.get(a.victim, a.victim)
        for table in (self.jumpers, self.reboots):
            for k, devs in table.items():
                table[k] = [ids.get(d, d) for d in devs]

    # -- the link -----------------------------------------------------------------------
    def link_at(self, t: float) -> dict:
        """The link's settings at run time ``t``: the scenario's, overridden by network faults then."""
        link = {"latency_ms": 0.0, "jitter_ms": 0.0, "drop": 0.0, "stall": 0.0, "reset": 0.0, **self.sc.link}
        for f in self.sc.faults:
            if f.kind == "network" and f.at <= t < f.end:
                link.update(f.link)
        return link

    def fate(self, device: str, service: str, n: int, link: dict) -> tuple[str, float, float]:
        """What happens to connection ``n`` of ``device`` to ``service``: (fate, latency s up, latency s down).

        fate is "ok", "drop" (closed at once), "stall" (held silent until the
        device gives up) or "reset" (reset after the request went through).
        """
        # Three uniform draws from one hash of the connection's name: as deterministic as a
        # seeded Random, and much cheaper to set up once per connection.
        h = hashlib.blake2b(f"crumb-sim/{self.seed}/link/{device}/{service}/{n}".encode(), digest_size=24).digest()
        r, u1, u2 = (int.from_bytes(h[i:i + 8], "big") / 2 ** 64 for i in (0, 8, 16))
        if r < link["drop"]:
            fate = "drop"
        elif r < link["drop"] + link["stall"]:
            fate = "stall"
        elif r < link["drop"] + link["stall"] + link["reset"]:
            fate = "reset"
        else:
            fate = "ok"
        lat, jit = link["latency_ms"] / 1000, link["jitter_ms"] / 1000
        return fate, lat + u1 * jit, lat + u2 * jit

    def windows(self) -> Iterator[tuple[str, float, float, dict]]:
        """(kind, start, end, detail) of every fault, burst and outage-like event, for charts."""
        for i, f in enumerate(self.sc.faults):
            detail: dict = {}
            if f.kind == "verifier_restart":
                detail["service"] = f.service
            if f.kind == "clock_jump":
                detail = {"devices": self.jumpers.get(i, []), "jump": f.jump}
            if f.kind == "network":
                detail = dict(f.link)
            yield f.kind, f.at, f.end, detail
        for i, b in enumerate(self.sc.bursts):
            yield f"burst:{b.kind}", b.at, b.at, {"devices": self.reboots.get(i, [])} if b.kind == "reboot" else {}

    def schedule(self) -> dict:
        """The plan as JSON: what two runs with the same seed share."""
        return {
            "seed": self.seed,
            "devices": [{"id": d.id, "boot_at": d.boot_at, "skew_ppm": d.skew_ppm, "transport": d.transport,
                         "offline_until": d.offline_until, "unique_id": d.uid.hex()} for d in self.devices],
            "faults": [{"kind": k, "start": round(s, 3), "end": round(e, 3), **d} for k, s, e, d in self.windows()],
            "commands": [{"at": c.at, "device": c.device, "op": c.op} for c in self.commands],
            "attacks": [{"at": a.at, "kind": a.kind, "victim": a.victim} for a in self.attempts],
        }
