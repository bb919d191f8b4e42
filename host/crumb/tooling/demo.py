"""The walkthrough: one reading from one device, through a three-hop chain, every step printed.

    crumb demo                              (or: python -m crumb.tooling.demo)

(The main job, `make demo`, is a whole fleet: `crumb sim`, crumb.tooling.sim.)

Everything runs here, on embedded defaults: the issuer (`crumb issuer serve`
in a child process, SQLite registry and audit log, in-memory nonce and rate
stores), the device client `ucrumb` (the code that runs on the
microcontroller, here on CPython), and three services (gateway → ingest →
storage) that verify offline with keys fetched from the issuer's GET /keys,
each with an in-memory replay store. Then the attacks the design stops, and
the audit log checked end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from .. import SigningKey, Verifier, attest
from ..errors import CrumbError
from ..inspect import inspect, render
from ..keys import b64u
from ..replay import MemoryReplayStore
from ..services.keyfetch import FetchedKeys

RES, OP = "/sensors/temp01", "publish"
HOPS = ("gateway", "ingest", "storage")

POLICY = """\
[issuer]
name = "crumb-demo"
url = "{url}"
hop_refs = "kid"

[defaults]
ttl = 60
uses = 1
batch = 4

[nodes]
{nodes}

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["publish"]
chain = ["gateway", "ingest", "storage"]
"""


def _device_module():
    """Import ucrumb: installed with crumb, or from the checkout's device/ folder."""
    try:
        from ucrumb import client
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "device"))
        from ucrumb import client
    return client


def main() -> int:
    out = Console(highlight=False, soft_wrap=True)
    step = 0
    failures: list[str] = []

    def say(title: str) -> None:
        nonlocal step
        step += 1
        out.print(f"\n[bold cyan]{step}. {title}[/]")

    def rejected(what: str, fn) -> None:
        try:
            fn()
        except CrumbError as e:
            out.print(f"   {what}: [red]rejected[/] — [bold]{e.code}[/]: {e.message}")
            return
        except Exception as e:  # the device client's errors (Denied) carry a code too
            if getattr(e, "code", None):  # its message already starts with the code
                out.print(f"   {what}: [red]rejected[/] — ", end="")
                out.print(str(e), markup=False)
                return
            raise
        failures.append(what)
        out.print(f"   {what}: [bold red]ACCEPTED — this is a bug[/]")

    def crumb_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True)

    from .localissuer import LocalIssuer
    from .localservices import reserve_port

    ucrumb = _device_module()
    with tempfile.TemporaryDirectory(prefix="crumb-demo-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "issuer-data"
        nodes = {name: SigningKey.generate() for name in HOPS}
        policy = tmp_path / "policy.toml"

        say("Issuer: `crumb issuer serve` on embedded defaults (SQLite, in-memory stores)")
        # The policy names the issuer's URL, so the port is chosen before the issuer starts,
        # and held until it listens there: no other program can take it in between.
        with reserve_port() as held:
            port = held.getsockname()[1]
            url = f"http://127.0.0.1:{port}"
            policy.write_text(POLICY.format(url=url, nodes="\n".join(
                f'{name} = "{b64u(key.public.raw)}"' for name, key in nodes.items())))
            issuer = LocalIssuer(data, policy, port=port).start()
        check = crumb_cli("policy", "check", str(policy))
        out.print(f"   policy check: {check.stdout.strip() or check.stderr.strip()}")
        try:
            out.print(f"   listening on {url}; data, keys, registry and audit log in {data}")

            say("Enroll the device: `crumb device add dev-0001 --group sensors`")
            creds = tmp_path / "dev-0001.json"
            r = crumb_cli("device", "add", "dev-0001", "--group", "sensors", "--data", str(data),
                          "--config", str(policy), "--out", str(creds))
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            shown = json.loads(creds.read_text())
            out.print(f"   credentials for the firmware: device_id={shown['device_id']}, issuer={shown['issuer']}, "
                      f"key={shown['key'][:8]}… (derived from the issuer's master secret, stored nowhere)")

            # A service's replay store refuses, after a restart, tokens issued up to its leeway
            # after it started (their earlier uses are unknown: its restart fence). These
            # services start here for the first time, with no earlier life to fence off.
            keys = FetchedKeys(f"{url}/keys")

            def service(hop: str | None = None) -> Verifier:
                return Verifier([], resolver=keys, hop=hop, replay=MemoryReplayStore(fence=False))

            verifiers = {name: service(name) for name in HOPS}
            destination = service()

            say(f"Device (ucrumb, the firmware's code): a token to '{OP}' {RES}")
            device = ucrumb.from_file(str(creds))
            token = device.token(RES, OP)
            out.print(f"   {len(token)} bytes; {device.round_trips} round trips (the first request carried no "
                      "clock: the issuer's refusal set it, one retry)")
            out.print(f"   cached for the next calls: {device.cached(RES, OP)} more single-use tokens of this batch")
            out.print(f"   Authorization: {device.header(RES, OP)[:60]}…")

            say("Services verify offline with keys from GET /keys, each hop attests")
            fresh = token
            for name in HOPS:
                v = verifiers[name].verify(token, RES, OP)
                token = attest(token, nodes[name], name)
                out.print(f"   {name:8} [green]accepted[/] sub={v.claims.sub}; attested → {len(token)} bytes")
            v = destination.verify(token, RES, OP)
            out.print(f"   storage's handler sees: passed through {' → '.join(v.attested)}")

            say("What the token holds (crumb inspect)")
            for line in render(inspect(token)).splitlines():
                out.print(f"   {line}", soft_wrap=True, markup=False)

            say("Attacks")
            spare = device.token(RES, OP)
            rejected("the same token again at the destination", lambda: destination.verify(token, RES, OP))
            rejected("a fresh token straight to ingest (skipping the gateway)",
                     lambda: verifiers["ingest"].verify(spare, RES, OP))
            rejected("the attested token back to the gateway", lambda: verifiers["gateway"].verify(token, RES, OP))
            rejected("a service outside the chain",
                     lambda: service("billing").verify(fresh, RES, OP))
            rejected("another operation", lambda: service("gateway").verify(spare, RES, "delete"))
            rejected("one flipped bit", lambda: service("gateway").verify(
                spare[:40] + bytes([spare[40] ^ 1]) + spare[41:], RES, OP))
            forger = ucrumb.Client(url, "dev-0001", bytes(32))
            rejected("a token request with a guessed device key", lambda: forger.token(RES, OP))
            rejected("a scope the policy does not grant", lambda: device.token("/valves/main", "open"))
        finally:
            issuer.stop()

        say("Audit log: every issuance and refusal, hash-chained (`crumb audit verify`, `crumb audit tail`)")
        verdict = crumb_cli("audit", "verify", "--data", str(data))
        out.print(f"   {verdict.stdout.strip()}", markup=False)
        if verdict.returncode != 0:
            failures.append("audit verify")
        for line in crumb_cli("audit", "tail", "--data", str(data)).stdout.strip().splitlines()[-5:]:
            out.print(f"   {line}", soft_wrap=True, markup=False)

    if failures:
        out.print(f"\n[bold red]demo found a bug: {', '.join(failures)}[/]")
        return 1
    out.print("\n[bold green]demo complete[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
