"""The real services a simulation runs against, on loopback, and what they cost.

Started here unless given by URL (``Endpoints``):

* the issuer: ``crumb issuer serve`` (``LocalIssuer``) on a data directory
  with the simulation's policy and every device enrolled; embedded defaults
  (SQLite, in-memory nonce and rate stores) unless the scenario uses Redis;
* the chain from ``examples/chain``: gateway → ingest → storage, each its own
  uvicorn process verifying with keys fetched from the issuer's ``GET /keys``;
  and, for the attacker, ``archive``: the storage service under a hop name
  that no token's chain declares (a service outside the chain);
* the command service ``examples/chain/commands.py``;
* with MQTT: Mosquitto and crumb's MQTT consumer (``mqttsink``, its own
  process); with Redis: ``redis-server``, shared by the issuer and every
  verifier's replay store.

Servers bind free ports (``LocalServer`` retries on a fresh one; the issuer
likewise). A service that does not start is a ``SimError`` carrying the end
of its log. ``cpu_seconds()`` is the CPU time the services used, from
``/proc`` (restarted processes included), for ``sim_cpu_share``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...keys import b64u, generate, save
from ...replay import DEFAULT_LEEWAY
from ..localservices import (
    HOST,
    MosquittoServer,
    RedisServer,
    ServiceFailed,
    ServiceMissing,
    UvicornProcess,
    reserve_port,
    terminate,
)
from .errors import SimError
from .events import Recorder
from .plan import CONSOLE, Plan
from .scenario import Scenario

HOPS = ("gateway", "ingest", "storage")


def repo_root() -> Path:
    """The source checkout: the simulator runs firmware/ and examples/chain/ from it."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "firmware" / "crumb_app.py").is_file() and (parent / "examples" / "chain").is_dir():
            return parent
    raise SimError("crumb sim needs a source checkout of crumb (it runs firmware/ and examples/chain/ from it)")


@dataclass
class Endpoints:
    """Services to use instead of starting them (``--issuer URL`` and friends)."""

    issuer: str | None = None
    credentials: Path | None = None      # with --issuer: a folder of `crumb device add` files
    gateway: str | None = None
    ingest: str | None = None
    storage: str | None = None
    commands: str | None = None
    broker: str | None = None            # host:port
    issuer_port: int | None = None       # start our issuer on this port


POLICY = """\
# Written by crumb sim for this run.
[issuer]
name = "crumb-sim"
url = "{url}"
max_skew = 60
hop_refs = "kid"

[defaults]
ttl = 60
uses = 1
batch = {batch}
rate = {rate}
burst = {burst}

[nodes]
{nodes}

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["publish"]
chain = ["gateway", "ingest", "storage"]{pop}
ttl = 120

[[groups.sensors.allow]]
resource = "/telemetry/*"
operations = ["publish"]

[[groups.sensors.allow]]
resource = "/valves/*"
operations = ["read"]

[groups.operators]
batch = 4
rate = 1000.0
burst = 1000

[[groups.operators.allow]]
resource = "/valves/*"
operations = ["open", "close"]
ttl = 30
"""


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    except (OSError, IndexError, ValueError):
        return 0


def _tail(text: str, lines: int = 3) -> str:
    got = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(got[-lines:]) or "(empty log)"


class Stack:
    def __init__(self, sc: Scenario, plan: Plan, workdir: Path, recorder: Recorder,
                 endpoints: Endpoints | None = None) -> None:
        self.sc = sc
        self.plan = plan
        self.dir = workdir
        self.rec = recorder
        self.ep = endpoints or Endpoints()
        self.repo = repo_root()
        self.chain_dir = self.repo / "examples" / "chain"
        self.issuer = None
        self.redis: RedisServer | None = None
        self.mosquitto: MosquittoServer | None = None
        self.services: dict[str, UvicornProcess] = {}
        self.sink: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}
        self.creds: dict[str, dict] = {}
        self.retired_ticks = 0
        self.versions: dict[str, str] = {}
        self._sink_thread: threading.Thread | None = None

    # -- start ----------------------------------------------------------------------------------
    def start(self, say: Callable[[str], None] = lambda m: None) -> Stack:
        sc = self.sc
        need_mqtt = sc.mqtt
        if need_mqtt and not self.ep.broker:
            self.mosquitto = self._start_server(MosquittoServer(), "mosquitto")
            self.urls["broker"] = f"{HOST}:{self.mosquitto.port}"
        elif self.ep.broker:
            self.urls["broker"] = self.ep.broker
        if sc.redis:
            self.redis = self._start_server(RedisServer(), "redis")
            self.urls["redis"] = self.redis.url
        if self.ep.issuer:
            self._external_issuer()
        else:
            say("starting the issuer")
            self._start_issuer()
        say("starting the verifying services")
        self._start_services()
        if need_mqtt:
            self._start_sink()
        if self.services or self.sink is not None:
            # A new replay store refuses tokens issued up to its leeway after it began (the restart
            # fence, docs/services.md §1); the services' stores began by now, so the fleet, whose
            # tokens are issued from here on, waits until that has passed.
            say("waiting for the new replay stores' restart fence to pass")
            time.sleep(max(0.0, self._fence_clear_at(say) - time.time()))
        return self

    def _fence_clear_at(self, say: Callable[[str], None]) -> int:
        """The first second the services' new replay stores accept tokens issued in."""
        clear = int(time.time()) + DEFAULT_LEEWAY + 1  # in-memory stores, started by now
        if "redis" in self.urls:  # the shared data set's fence also covers the replicas' clock spread
            from ...errors import CrumbError
            from ...services.replay_redis import RedisReplayStore

            store = RedisReplayStore(self.urls["redis"])
            try:
                clear = max(clear, store.fence_clear_at() or 0)
            except CrumbError as e:  # the services will say so themselves, with their code
                say(f"cannot read the replay store's fence ({e})")
            finally:
                store.close()
        return clear

    def _start_server(self, server, name: str):
        try:
            return server.start()
        except ServiceMissing as e:
            raise SimError(str(e)) from None
        except ServiceFailed:
            raise SimError(f"{name} did not start on {server.host}:{server.port}; its log ends: "
                           f"{_tail(server.log_tail())}") from None

    def _node_keys(self) -> dict[str, Path]:
        keys = {}
        kdir = self.dir / "keys"
        kdir.mkdir(parents=True, exist_ok=True)
        for name in HOPS:
            path = kdir / f"{name}.key"
            save(generate(), str(path))
            keys[name] = path
        return keys

    def _start_issuer(self) -> None:
        from ...keys import load_signing_key
        from ..bench.device import enroll_data_dir
        from ..localissuer import IssuerFailed, LocalIssuer

        sc = self.sc
        self.node_keys = self._node_keys()
        nodes = "\n".join(f'{n} = "{b64u(load_signing_key(str(p)).public.raw)}"' for n, p in self.node_keys.items())
        per_device = 1 / sc.telemetry_every + (1 / sc.poll_every if sc.commands and sc.poll_every else 0)
        rate = max(2.0, round(4 * per_device, 2))
        burst = max(16, 4 * sc.batch)
        devices = {d.id: "sensors" for d in self.plan.devices}
        devices[CONSOLE] = "operators"
        port = self.ep.issuer_port
        if port is not None:
            _check_port(port, "--issuer-port")
        # The policy names the issuer's URL, so the port is chosen before the issuer starts, and
        # held until it listens there: no other program can take it in between.
        with reserve_port(port=port or 0) as held:
            p = held.getsockname()[1]
            url = f"http://{HOST}:{p}"
            policy = POLICY.format(url=url, batch=sc.batch, rate=rate, burst=burst, nodes=nodes,
                                   pop='\npop = "batch"' if sc.pop else "")
            data, credentials = enroll_data_dir(self.dir / "issuer", policy, devices)
            args: tuple[str, ...] = ("--audit-sync", "normal")
            issuer = LocalIssuer(data.root, data.policy, redis_url=self.urls.get("redis"), port=p, args=args)
            try:
                issuer.start()
            except IssuerFailed as e:
                issuer.close()
                raise SimError(f"the issuer did not start; its log ends: {_tail(str(e).split('log:', 1)[-1])}")
        self.issuer = issuer
        self.urls["issuer"] = url
        self.creds = credentials(url)

    def _external_issuer(self) -> None:
        folder = self.ep.credentials
        if folder is None:
            raise SimError("--issuer needs --credentials DIR: the devices' files from `crumb device add`")
        files = sorted(Path(folder).glob("*.json"))
        creds = []
        for f in files:
            try:
                doc = json.loads(f.read_text())
                creds.append(doc)
            except (OSError, ValueError) as e:
                raise SimError(f"{f}: not a credentials file ({e})") from None
        devices = [c for c in creds if c.get("group") != "operators"]
        if len(devices) < self.sc.devices:
            raise SimError(f"--credentials {folder} has {len(devices)} device files; the run needs "
                           f"{self.sc.devices} (lower --devices or enroll more)")
        # The plan's device ids become the enrolled ones, in file order.
        self.plan.rename({p.id: doc["device_id"] for p, doc in zip(self.plan.devices, devices)})
        for profile, doc in zip(self.plan.devices, devices):
            self.creds[profile.id] = doc
        ops = [c for c in creds if c.get("group") == "operators"]
        if ops:
            self.creds[CONSOLE] = ops[0]
        self.urls["issuer"] = self.ep.issuer.rstrip("/")

    def _env(self, **extra: str) -> dict[str, str]:
        env = {"CRUMB_KEYS_URL": self.urls["issuer"] + "/keys", "PYTHONUNBUFFERED": "1"}
        if "redis" in self.urls:
            env["CRUMB_REDIS"] = self.urls["redis"]
        env.update(extra)
        return env

    def _uvicorn(self, name: str, module: str, **env: str) -> UvicornProcess:
        return UvicornProcess(f"{module}:app", app_dir=self.chain_dir, env=self._env(**env), name=name)

    def _start_services(self) -> None:
        sc = self.sc
        for name, url in (("gateway", self.ep.gateway), ("ingest", self.ep.ingest), ("storage", self.ep.storage),
                          ("commands", self.ep.commands)):
            if url:
                self.urls[name] = url.rstrip("/")
        waves: list[list[tuple[str, Callable[[], UvicornProcess]]]] = [[], [], []]
        if sc.chain and "gateway" not in self.urls:
            if self.ep.issuer:
                raise SimError("with --issuer, give the chain too (--gateway URL), or a scenario without it")
            waves[0].append(("storage", lambda: self._uvicorn("storage", "storage")))
            waves[1].append(("ingest", lambda: self._uvicorn("ingest", "ingest",
                                                             CRUMB_NODE_KEY=str(self.node_keys["ingest"]),
                                                             CRUMB_NEXT=self.urls["storage"])))
            waves[2].append(("gateway", lambda: self._uvicorn("gateway", "gateway",
                                                              CRUMB_NODE_KEY=str(self.node_keys["gateway"]),
                                                              CRUMB_NEXT=self.urls["ingest"])))
            if sc.attacker:
                waves[0].append(("archive", lambda: self._uvicorn("archive", "storage", CRUMB_HOP="archive",
                                                                  CRUMB_REPLICA="archive")))
        if sc.commands and "commands" not in self.urls:
            waves[0].append(("commands", lambda: self._uvicorn("commands", "commands")))
        for wave in waves:
            errors: list[str] = []

            def launch(name: str, make: Callable[[], UvicornProcess], errors: list[str]) -> None:
                svc = make()
                try:
                    svc.start()
                except ServiceFailed:
                    errors.append(f"the {name} service did not start; its log ends: {_tail(svc.log_tail())}")
                    return
                self.services[name] = svc
                self.urls[name] = svc.url

            threads = [threading.Thread(target=launch, args=(*w, errors)) for w in wave]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise SimError(errors[0])

    def _start_sink(self) -> None:
        host, _, port = self.urls["broker"].rpartition(":")
        cmd = [sys.executable, "-m", "crumb.tooling.sim.mqttsink", "--host", host, "--port", port,
               "--keys", self.urls["issuer"] + "/keys", "--topic", "telemetry/+"]
        if "redis" in self.urls:
            cmd += ["--redis", self.urls["redis"]]
        self.sink = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        first = self.sink.stdout.readline() if self.sink.stdout else ""
        if not first.startswith("ready"):
            err = self.sink.stderr.read() if self.sink.stderr else ""
            terminate(self.sink, 5)
            raise SimError(f"the MQTT consumer did not start; its log ends: {_tail(first + err)}")
        self._sink_thread = threading.Thread(target=self._read_sink, name="sim-mqttsink", daemon=True)
        self._sink_thread.start()

    def _read_sink(self) -> None:
        assert self.sink is not None and self.sink.stdout is not None
        for line in self.sink.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            t = doc.pop("mono", None)
            ev = {"kind": "mqtt", **doc}
            ev["t"] = round(t - self.rec.t0, 4) if t is not None else round(self.rec.now(), 4)
            with self.rec._lock:
                self.rec.events.append(ev)

    # -- faults --------------------------------------------------------------------------------
    def restart(self, name: str) -> float:
        """Stop and start a service on the same port; returns how long it was away (s)."""
        svc = self.services.get(name)
        if svc is None:
            raise SimError(f"cannot restart {name}: the simulator did not start it")
        t0 = time.monotonic()
        if svc.proc is not None:
            self.retired_ticks += _cpu_ticks(svc.proc.pid)
        svc.stop()
        svc.start()
        return time.monotonic() - t0

    def restart_redis(self) -> float:
        if self.redis is None:
            raise SimError("cannot restart Redis: the simulator did not start it")
        t0 = time.monotonic()
        if self.redis.proc is not None:
            self.retired_ticks += _cpu_ticks(self.redis.proc.pid)
        self.redis.stop()
        self.redis.start()
        return time.monotonic() - t0

    # -- accounting ---------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        out = {}
        if self.issuer is not None and self.issuer.proc is not None:
            out["issuer"] = self.issuer.proc.pid
        for name, svc in self.services.items():
            if svc.proc is not None:
                out[name] = svc.proc.pid
        for name, srv in (("redis", self.redis), ("mosquitto", self.mosquitto)):
            if srv is not None and srv.proc is not None:
                out[name] = srv.proc.pid
        if self.sink is not None:
            out["mqttsink"] = self.sink.pid
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each service process (children included), and in total."""
        hz = os.sysconf("SC_CLK_TCK")
        out = {name: _cpu_ticks(pid) / hz for name, pid in self.pids().items()}
        out["restarted"] = self.retired_ticks / hz
        return out

    def collect_versions(self) -> dict[str, str]:
        v = {}
        for name, prog, args in (("redis-server", "redis-server", ["--version"]),
                                 ("mosquitto", "mosquitto", ["-h"])):
            srv = self.redis if name == "redis-server" else self.mosquitto
            if srv is None:
                continue
            try:
                out = subprocess.run([srv.executable(), *args], capture_output=True, check=False, text=True, timeout=5)
                text = (out.stdout or out.stderr).strip().splitlines()[0]
                v[name] = text
            except (OSError, IndexError, subprocess.TimeoutExpired):
                v[name] = "unknown"
        self.versions = v
        return v

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.sink is not None:
            terminate(self.sink, 5)
            if self._sink_thread is not None:
                self._sink_thread.join(5)
        threads = [threading.Thread(target=s.close) for s in self.services.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.issuer is not None:
            self.issuer.close()
        for srv in (self.redis, self.mosquitto):
            if srv is not None:
                srv.close()


def _check_port(port: int, option: str) -> None:
    """SimError when ``port`` on loopback is taken (a busy port is the user's to change)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise SimError(f"{option} {port}: {HOST}:{port} is busy ({e.strerror}); choose another port or "
                           f"leave {option} out to use a free one") from None
