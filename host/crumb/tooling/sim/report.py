"""The report folder: summary.json, report.html (charts inline, no script), events.jsonl, serial logs.

    DIR/summary.json    every figure (metrics.summarize), the fault schedule, versions, seed, CPU
    DIR/report.html     the same for people: key figures, four SVG charts, the attacks, the schedule
    DIR/events.jsonl    every event the figures come from, one JSON object a line
    DIR/serial/ID.log   what each device printed (its serial console), for devices that printed
"""

from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from . import charts
from .errors import SimError


def check_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and prove it can be written, before anything runs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".crumb-sim-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SimError(f"--report {folder}: cannot write there ({e.strerror or e})") from None
    return folder


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) or "none"
    return str(v)


def html(summary: dict[str, Any], events: list[dict[str, Any]], windows: list) -> str:
    s = summary
    d = s["duration"]
    figures = [
        ("devices", s["devices"]),
        ("tokens requested / issued", f"{_fmt(s['tokens']['requested'])} / {_fmt(s['tokens']['issued'])}"),
        ("tokens refused, by code", _fmt(s["tokens"]["refused_by_code"])),
        ("token latency p50 / p95 / p99 (ms)", " / ".join(_fmt(s["token_latency_ms"][k]) for k in
                                                          ("p50", "p95", "p99"))),
        ("authorized calls", s["authorized_calls"]),
        ("calls rejected, by code", _fmt(s["calls"]["rejected_by_code"])),
        ("calls not sent, by reason", _fmt(s["calls"]["not_sent_by_reason"])),
        ("cache hit rate", s["cache_hit_rate"]),
        ("issuer round trips per authorized call", s["round_trips_per_authorized_call"]),
        ("bytes on the device's link per authorized call", s["bytes_per_authorized_call"]),
        ("commands sent / applied", f"{s['commands']['sent']} / {s['commands']['device_verdicts'].get('applied', 0)}"),
        ("attacks: attempts / refused / accepted",
         f"{len(s['attacks'])} / {len(s['attacks']) - s['attacker_successes']} / {s['attacker_successes']}"),
        ("sim_cpu_share (the simulator's CPU ÷ the run's)", s["sim_cpu_share"]),
    ]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in figures)
    att = "".join(
        f"<tr class=\"{a['outcome']}\"><td>{a['t']:.1f}</td><td>{escape(a['kind'])}</td><td>{escape(a['victim'])}</td>"
        f"<td>{escape(a['target'])}</td><td>{a['outcome']}</td><td>{escape(a['code'])}</td>"
        f"<td>{escape(a['expected'])}</td></tr>" for a in s["attacks"])
    faults = "".join(f"<tr><td>{escape(f['kind'])}</td><td>{f['start']:g}</td><td>{f['end']:g}</td>"
                     f"<td>{escape(json.dumps({k: v for k, v in f.items() if k not in ('kind', 'start', 'end')}))}"
                     f"</td></tr>" for f in s["schedule"]["faults"])
    versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
    figs = [charts.latency(events, windows, d), charts.cache(events, windows, d), charts.outcomes(s),
            charts.attacks(s, d)]
    verdict = ("every attack was refused" if s["attacks"] and not s["attacker_successes"]
               else f"{s['attacker_successes']} attack(s) ACCEPTED" if s["attacks"] else "no attacker")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>crumb sim: {escape(s['scenario'])}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px; }}
th {{ background: #f6f6f6; font-weight: normal; }}
tr.accepted td {{ background: #fdd; }}
figure {{ margin: 12px 0 22px; }}
figcaption {{ font-size: 12px; color: #555; }}
.verdict {{ font-size: 18px; font-weight: bold; }}
</style></head>
<body>
<h1>crumb sim: {escape(s['scenario'])}</h1>
<p>{escape(s.get('description') or '')}</p>
<p class="verdict">{escape(verdict)}</p>
<p>{s['devices']} devices, {d:g} s, seed {s['seed']}; every figure below is computed from the
{s['events']:,} events recorded during the run (events.jsonl).</p>
<table>{rows}</table>
<figure>{figs[0]}<figcaption>Issuer exchanges on the devices' links and calls the services accepted.
Shaded: the fault windows; dashed lines: instant faults.</figcaption></figure>
<figure>{figs[1]}<figcaption>Green: calls whose token came from the device's cache; blue: token requests
to the issuer.</figcaption></figure>
<figure>{figs[2]}<figcaption>What became of every call, and the issuer's refusals.</figcaption></figure>
<figure>{figs[3]}<figcaption>Every attempt the attacker made, and the code it was refused with.</figcaption></figure>
<h2>Attacks</h2>
<table><tr><th>t (s)</th><th>kind</th><th>victim</th><th>sent to</th><th>outcome</th><th>code</th>
<th>expected</th></tr>{att}</table>
<h2>Fault schedule</h2>
<table><tr><th>fault</th><th>start (s)</th><th>end (s)</th><th>detail</th></tr>{faults}</table>
<p style="font-size:12px;color:#555">{escape(versions)}</p>
</body></html>
"""


def write(folder: Path, summary: dict[str, Any], events: list[dict[str, Any]], windows: list,
          serial: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    with open(folder / "events.jsonl", "w") as f:
        f.writelines(json.dumps(e, default=str) + "\n" for e in sorted(events, key=lambda e: e["t"]))
    logs = folder / "serial"
    if any(serial.values()):
        logs.mkdir(exist_ok=True)
        for dev, lines in serial.items():
            if lines:
                (logs / f"{dev}.log").write_text("".join(lines))
    page = folder / "report.html"
    page.write_text(html(summary, events, windows))
    return page
