"""The live view while a simulation runs (rich), and the summary table printed at the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from .events import Recorder


class LiveView:
    """A small table refreshed four times a second: time, devices, tokens, calls, attacks, faults."""

    def __init__(self, console: Console, rec: Recorder, duration: float, devices: int,
                 faults_now: Callable[[], list[str]]) -> None:
        self.console = console
        self.rec = rec
        self.duration = duration
        self.devices = devices
        self.faults_now = faults_now
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False,
                         redirect_stdout=False, redirect_stderr=False, get_renderable=self._render)

    def _render(self) -> Table:
        c = self.rec.counts
        t = min(self.rec.now(), self.duration)
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]run[/]", ProgressBar(total=self.duration, completed=t, width=30),
                      f"{t:5.1f} / {self.duration:g} s")
        table.add_row("[bold]devices[/]", f"{self.devices}", "")
        table.add_row("[bold]tokens issued[/]", f"{c.get('tokens', 0):,}", "")
        table.add_row("[bold]calls[/]", f"[green]{c.get('calls_ok', 0):,} accepted[/]",
                      f"[red]{c.get('calls_refused', 0):,} refused[/]")
        table.add_row("[bold]attacks[/]", f"[green]{c.get('attacks_refused', 0)} refused[/]",
                      f"[red]{c.get('attacks_accepted', 0)} accepted[/]")
        table.add_row("[bold]faults now[/]", ", ".join(self.faults_now()) or "none", "")
        return table

    def __enter__(self) -> Self:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)


def summary_table(s: dict[str, Any]) -> Table:
    """Devices, tokens, authorized calls, and each attack kind with how it was refused."""
    t = Table(title=f"crumb sim: {s['scenario']} ({s['devices']} devices, {s['duration']:g} s, seed {s['seed']})",
              show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("figure", overflow="fold")
    tok = s["tokens"]
    refused = ", ".join(f"{k} {v}" for k, v in tok["refused_by_code"].items()) or "none"
    t.add_row("devices", f"{s['devices']}")
    t.add_row("tokens", f"{tok['issued']:,} issued of {tok['requested']:,} requested in {tok['exchanges']:,} "
                        f"issuer round trips; refused: {refused}")
    lat = s["token_latency_ms"]
    t.add_row("token latency", f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms")
    calls = s["calls"]
    rej = ", ".join(f"{k} {v}" for k, v in calls["rejected_by_code"].items()) or "none"
    t.add_row("authorized calls", f"{s['authorized_calls']:,} accepted by the services; rejected: {rej}")
    t.add_row("cache", f"hit rate {s['cache_hit_rate']}, {s['round_trips_per_authorized_call']} issuer round "
                       f"trips and {s['bytes_per_authorized_call']} link bytes per authorized call")
    if s["attacks"]:
        for kind, codes in sorted(s["attacks_by_kind"].items()):
            mine = [a for a in s["attacks"] if a["kind"] == kind]
            bad = [a for a in mine if a["outcome"] == "accepted"]
            how = ", ".join(f"{c} ×{n}" for c, n in codes.items())
            verdict = f"[red]{len(bad)} ACCEPTED[/]" if bad else f"[green]refused[/] {how}"
            t.add_row(f"attack: {kind}", verdict)
    t.add_row("sim_cpu_share", f"{s['sim_cpu_share']} (simulator {s['cpu']['sim_seconds']:.1f} s CPU, "
                               f"services {s['cpu']['services_seconds']:.1f} s)")
    return t
