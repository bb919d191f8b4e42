"""`crumb sim`: the command line of the fleet simulator (docs/simulator.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ...extras import require
from .errors import SimError

DEFAULT_SCENARIO = "attacker"


def _scenarios_dir() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        d = parent / "examples" / "scenarios"
        if d.is_dir():
            return d
    return None


@click.command("sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario", required=False, metavar="[SCENARIO.toml]")
@click.option("--devices", type=click.IntRange(1, 100_000), help="Number of devices (overrides [run] devices).")
@click.option("--seed", type=click.IntRange(0), help="Seed of the fault schedule, workload and attacker (overrides [run] seed).")
@click.option("--duration", type=click.FloatRange(0, min_open=True), metavar="SECONDS",
              help="Length of the run (overrides [run] duration; times given as '40%' scale with it).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where summary.json, report.html and events.jsonl go (default: crumb-sim-report/SCENARIO).")
@click.option("--issuer", metavar="URL", help="Use this issuer instead of starting one (needs --credentials).")
@click.option("--credentials", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="With --issuer: a folder of the devices' files from `crumb device add` (group 'operators': the console).")
@click.option("--gateway", metavar="URL", help="Use this chain entry (gateway) instead of starting the chain.")
@click.option("--ingest", metavar="URL", help="The chain's ingest service, for the attacker's skipped-hop attempts.")
@click.option("--commands", "commands_url", metavar="URL", help="Use this command service instead of starting one.")
@click.option("--broker", metavar="HOST:PORT", help="Use this MQTT broker instead of starting Mosquitto.")
@click.option("--issuer-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve the issuer the simulator starts on this port (default: a free one).")
@click.option("--no-live", is_flag=True, help="No live progress display (for logs and CI).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
def sim(scenario, devices, seed, duration, report_dir, issuer, credentials, gateway, ingest, commands_url, broker,
        issuer_port, no_live, as_json) -> None:
    """Simulate a fleet of devices running the real firmware against real services.

    Each device runs ucrumb and firmware/crumb_app.py unmodified on CPython (one
    thread each, hardware from Adafruit Blinka's OS-agnostic board), against
    a real issuer, the gateway → ingest → storage chain, the command service
    and, when the scenario says so, Mosquitto and Redis, all on loopback. A
    TCP proxy between the devices and the services injects the scenario's
    faults, and an attacker on it replays and forges what it captures.

    SCENARIO is a TOML file (examples/scenarios/: baseline, flaky-network,
    issuer-outage, attacker, scale); without one, the attacker scenario.
    Prints a summary table and writes DIR/summary.json, DIR/report.html and
    DIR/events.jsonl. Exit status: 0, 1 if any attack was accepted, 2 for bad
    input or a service that did not start.
    """
    require("sim", "crumb sim")
    from rich.console import Console

    from .progress import summary_table
    from .runner import run
    from .scenario import load
    from .stack import Endpoints

    out = Console(highlight=False, file=sys.stderr if as_json else sys.stdout)  # --json: stdout is the JSON
    try:
        if scenario is None:
            d = _scenarios_dir()
            if d is None:
                raise SimError("no SCENARIO given and no examples/scenarios/ folder here: name a scenario file")
            scenario = str(d / f"{DEFAULT_SCENARIO}.toml")
        sc = load(scenario)
        if devices is not None:
            sc.devices = devices
        if seed is not None:
            sc.seed = seed
        if duration is not None:
            sc.duration = duration
        folder = report_dir or Path("crumb-sim-report") / sc.name
        endpoints = Endpoints(issuer=issuer, credentials=credentials, gateway=gateway, ingest=ingest,
                              commands=commands_url, broker=broker, issuer_port=issuer_port)
        summary, page = run(sc, report_dir=folder, endpoints=endpoints, console=out,
                            live=not no_live and not as_json)
    except SimError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        out.print(summary_table(summary))
        out.print(f"report: {page.resolve()}")
        out.print(f"        {page.parent.resolve() / 'summary.json'}")
    sys.exit(1 if summary["attacker_successes"] else 0)


command = sim
