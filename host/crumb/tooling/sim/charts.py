"""The report's charts, drawn here as SVG text: no plotting library, no script, readable offline.

Each function takes the run's events (and the plan's fault windows) and
returns one ``<svg class="chart">`` element with a title, axes and a legend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from html import escape
from typing import Any

from .metrics import percentile

W, H = 820, 280
L, R, T, B = 64, 150, 34, 40  # margins: left, right (legend), top, bottom
PW, PH = W - L - R, H - T - B
COLORS = {"token": "#1f77b4", "call": "#ff7f0e", "hit": "#2ca02c", "issuer": "#1f77b4", "accepted": "#2ca02c",
          "rejected": "#d62728", "not_sent": "#7f7f7f", "refused": "#2ca02c", "fault": "#d62728"}
FAULT_FILL = {"issuer_outage": "#fdd0a2", "network": "#dadaeb", "verifier_restart": "#fcbba1",
              "redis_restart": "#fcbba1", "clock_jump": "#c7e9c0"}


def _svg(title: str, body: list[str], desc: str, height: int = H) -> str:
    return (f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">'
            f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
            f'<rect x="0" y="0" width="{W}" height="{height}" fill="#ffffff"/>'
            f'<text x="{L}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _nice(v: float) -> float:
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def _axes(x_max: float, y_max: float, x_label: str, y_label: str) -> list[str]:
    out = [f'<line x1="{L}" y1="{T + PH}" x2="{L + PW}" y2="{T + PH}" stroke="#333"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + PH}" stroke="#333"/>']
    for i in range(6):
        y = T + PH - PH * i / 5
        v = y_max * i / 5
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + PW}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for i in range(6):
        x = L + PW * i / 5
        out.append(f'<text x="{x:.1f}" y="{T + PH + 16}" text-anchor="middle">{x_max * i / 5:.0f}</text>')
    out.append(f'<text x="{L + PW / 2}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{T + PH / 2}" text-anchor="middle" transform="rotate(-90 14 {T + PH / 2})">'
               f"{escape(y_label)}</text>")
    return out


def _legend(items: list[tuple[str, str, str]]) -> list[str]:
    out = []
    for i, (label, color, style) in enumerate(items):
        y = T + 8 + i * 18
        x = L + PW + 12
        if style == "box":
            out.append(f'<rect x="{x}" y="{y - 8}" width="14" height="10" fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dash" else ""
            out.append(f'<line x1="{x}" y1="{y - 3}" x2="{x + 14}" y2="{y - 3}" stroke="{color}" '
                       f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 20}" y="{y}">{escape(label)}</text>')
    return out


def _windows(windows: Iterable[tuple[str, float, float, dict]], x_max: float) -> list[str]:
    out = []
    for kind, start, end, _ in windows:
        if kind.startswith("burst:") or end > start:
            x0 = L + PW * start / x_max
            x1 = L + PW * max(end, start + x_max / 200) / x_max
            fill = FAULT_FILL.get(kind, "#e0e0e0")
            out.append(f'<rect class="fault" x="{x0:.1f}" y="{T}" width="{max(1.0, x1 - x0):.1f}" height="{PH}" '
                       f'fill="{fill}" opacity="0.7"><title>{escape(kind)} {start:g}–{end:g} s</title></rect>')
            out.append(f'<text x="{x0 + 2:.1f}" y="{T + 11}" font-size="9" fill="#555">{escape(kind)}</text>')
        else:  # an instant: a restart, a clock jump
            x = L + PW * start / x_max
            out.append(f'<line class="fault" x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{T + PH}" stroke="#d62728" '
                       f'stroke-dasharray="3 3"><title>{escape(kind)} at {start:g} s</title></line>')
            out.append(f'<text x="{x + 2:.1f}" y="{T + 11}" font-size="9" fill="#d62728">{escape(kind)}</text>')
    return out


def _bins(duration: float) -> float:
    return max(1.0, round(duration / 90, 1))


def latency(events: list[dict[str, Any]], windows: list, duration: float) -> str:
    """Token exchange and accepted-call latency over time (p50 and p95 per time bin), faults shaded."""
    step = _bins(duration)
    n = int(duration // step) + 1
    series = {"token": [[] for _ in range(n)], "call": [[] for _ in range(n)]}
    for e in events:
        i = min(n - 1, max(0, int(e["t"] // step)))
        if e["kind"] == "exchange" and e["service"] == "issuer" and "status" in e and e["device"] != "console-1":
            series["token"][i].append(e["ms"])
        elif (e["kind"] == "exchange" and e["service"] in ("gateway", "commands") and e["device"] != "console-1"
              and 200 <= e.get("status", 0) < 300):
            series["call"][i].append(e["ms"])
    lines = {}
    top = 1.0
    for name, bins in series.items():
        for q in (50, 95):
            pts = [(i, percentile(b, q)) for i, b in enumerate(bins) if b]
            lines[(name, q)] = pts
            top = max(top, *(v for _, v in pts)) if pts else top
    y_max = _nice(top)
    body = _windows(windows, duration) + _axes(duration, y_max, "seconds into the run", "milliseconds")
    for (name, q), pts in lines.items():
        runs: list[list[tuple[int, float]]] = []
        for i, v in pts:  # a bin without data breaks the line: nothing was measured there
            if runs and runs[-1][-1][0] == i - 1:
                runs[-1].append((i, v))
            else:
                runs.append([(i, v)])
        dash = ' stroke-dasharray="4 3"' if q == 95 else ""
        for run in runs:
            xy = [(L + PW * (i + 0.5) * step / duration, T + PH - PH * v / y_max) for i, v in run]
            if len(xy) == 1:
                body.append(f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="1.5" fill="{COLORS[name]}"/>')
                continue
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            body.append(f'<polyline class="series" points="{path}" fill="none" stroke="{COLORS[name]}" '
                        f'stroke-width="{2 if q == 50 else 1.5}"{dash}/>')
    body += _legend([("token p50", COLORS["token"], "line"), ("token p95", COLORS["token"], "dash"),
                     ("call p50", COLORS["call"], "line"), ("call p95", COLORS["call"], "dash")])
    return _svg("Latency over time (faults shaded)", body,
                f"Issuer exchanges and accepted calls, p50 and p95 per {step:g} s bin.")


def cache(events: list[dict[str, Any]], windows: list, duration: float) -> str:
    """Per time bin: calls served from the cache vs token requests to the issuer."""
    step = max(1.0, round(duration / 40, 1))
    n = int(duration // step) + 1
    hits, reqs = [0] * n, [0] * n
    for e in events:
        i = min(n - 1, max(0, int(e["t"] // step)))
        if e["kind"] == "call" and e["trips"] == 0:
            hits[i] += 1
        elif e["kind"] == "exchange" and e["service"] == "issuer" and e["device"] != "console-1":
            reqs[i] += 1
    y_max = _nice(max(hits + reqs + [1]))
    body = _windows(windows, duration) + _axes(duration, y_max, "seconds into the run", f"per {step:g} s")
    bw = PW / n / 2.4
    for i in range(n):
        x = L + PW * i / n + bw * 0.2
        for j, (v, c) in enumerate(((hits[i], COLORS["hit"]), (reqs[i], COLORS["issuer"]))):
            h = PH * v / y_max
            body.append(f'<rect class="bar" x="{x + j * bw:.1f}" y="{T + PH - h:.1f}" width="{bw:.1f}" '
                        f'height="{h:.1f}" fill="{c}"><title>{v}</title></rect>')
    body += _legend([(f"cache hits ({sum(hits)})", COLORS["hit"], "box"),
                     (f"issuer requests ({sum(reqs)})", COLORS["issuer"], "box")])
    return _svg("Cache hits vs issuer requests", body,
                "Calls whose token came from the device's cache, and the devices' token requests, per time bin.")


def outcomes(summary: dict[str, Any]) -> str:
    """Horizontal bars: calls accepted, rejected by code, and not sent by reason."""
    calls = summary["calls"]
    rows: list[tuple[str, int, str]] = []
    for what, v in sorted(calls["accepted_by_call"].items()):
        rows.append((f"accepted: {what}", v, COLORS["accepted"]))
    for code, v in calls["rejected_by_code"].items():
        rows.append((f"rejected: {code}", v, COLORS["rejected"]))
    for why, v in calls["not_sent_by_reason"].items():
        rows.append((f"not sent: {why}", v, COLORS["not_sent"]))
    for code, v in summary["tokens"]["refused_by_code"].items():
        rows.append((f"token refused: {code}", v, "#9467bd"))
    rows = rows[:14] or [("no calls", 0, COLORS["not_sent"])]
    left = 260
    width = W - left - 70
    row_h = 22.0
    height = int(T + 16 + row_h * len(rows))
    top = max(r[1] for r in rows) or 1
    body = []
    for i, (label, v, color) in enumerate(rows):
        y = T + 6 + i * row_h
        w = width * v / top
        body.append(f'<text x="{left - 6}" y="{y + row_h * 0.65:.1f}" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect class="bar" x="{left}" y="{y:.1f}" width="{max(w, 1):.1f}" height="{row_h * 0.7:.1f}" '
                    f'fill="{color}"><title>{escape(label)}: {v}</title></rect>')
        body.append(f'<text x="{left + max(w, 1) + 4:.1f}" y="{y + row_h * 0.65:.1f}">{v}</text>')
    return _svg("Outcomes by code", body, "Calls accepted, rejected by the service's code, not sent; token refusals.",
                height)


def attacks(summary: dict[str, Any], duration: float) -> str:
    """One row per attack kind: each attempt a mark at its time, green when refused, red when accepted."""
    atts = summary["attacks"]
    kinds = sorted({a["kind"] for a in atts})
    body: list[str] = []
    if not kinds:
        body.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#777">'
                    "no attacker in this scenario</text>")
        return _svg("The attacker's attempts", body, "No attempts.")
    left = 150
    width = W - left - 250
    row_h = 22.0
    height = int(T + 16 + row_h * len(kinds) + B)
    for i in range(6):
        x = left + width * i / 5
        body.append(f'<text x="{x:.1f}" y="{height - 22}" text-anchor="middle">{duration * i / 5:.0f}</text>')
    body.append(f'<text x="{left + width / 2}" y="{height - 6}" text-anchor="middle">seconds into the run</text>')
    for r, kind in enumerate(kinds):
        y = T + 8 + r * row_h + row_h / 2
        mine = [a for a in atts if a["kind"] == kind]
        codes = Counter(a["code"] or a["outcome"] for a in mine)
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(kind)}</text>')
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>')
        for a in mine:
            x = left + width * a["t"] / duration
            color = COLORS["refused"] if a["outcome"] == "refused" else COLORS["rejected"]
            body.append(f'<circle class="attempt" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}">'
                        f'<title>{escape(kind)} → {escape(a["target"])}: {a["outcome"]} {escape(a["code"])}'
                        f"</title></circle>")
        refused = sum(1 for a in mine if a["outcome"] == "refused")
        label = ", ".join(f"{c} ×{n}" for c, n in codes.items())
        body.append(f'<text x="{left + width + 10}" y="{y + 4:.1f}">{refused}/{len(mine)} refused: '
                    f"{escape(label)}</text>")
    return _svg("The attacker's attempts", body, "Each attempt at its time; green: refused, red: accepted.", height)
