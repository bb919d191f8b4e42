"""summary.json's figures, each computed from the run's events and nothing else.

``tokens``: from the issuer exchanges the proxy saw on the devices' links
(requested: the tokens each request asked for; issued: those in the
answers; refused: the answers' codes; failed: exchanges that got no answer,
by what happened to the connection). ``token_latency_ms``: those exchanges,
connection accepted to answer sent, percentiles over the answered ones.

``calls``: what the applications reported (``call`` events) plus the MQTT
consumer's verdicts: accepted, rejected by the service's code, and the calls
that never reached a service (no token, service unreachable, denied).
An *authorized call* is one a service accepted (telemetry through the chain,
a poll of the command service, or an envelope the MQTT consumer accepted).
``cache_hit_rate``: the share of calls with a token whose token needed no
issuer round trip. ``calls.latency_ms``: the accepted service exchanges
on the devices' links, measured by the proxy (a device's own clock may
jump). ``round_trips_per_authorized_call``: issuer exchanges
on the devices' links ÷ authorized calls. ``bytes_per_authorized_call``:
every byte on the devices' links, both ways, all services ÷ authorized calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return round(s[k], 2)


def _pcts(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": round(max(values), 2) if values else None}


def summarize(events: Iterable[dict[str, Any]], devices: Iterable[str]) -> dict[str, Any]:
    devs = set(devices)
    ev = sorted(events, key=lambda e: e["t"])
    ex = [e for e in ev if e["kind"] == "exchange" and e["device"] in devs]
    issuer = [e for e in ex if e["service"] == "issuer"]
    answered = [e for e in issuer if "status" in e]
    refused = Counter(e.get("code") or "error" for e in answered if e.get("code"))
    failed = Counter(e["fate"] for e in issuer if "status" not in e or e["fate"] == "reset")
    tokens = {
        "requested": sum(e.get("requested", 0) for e in answered),
        "issued": sum(e.get("issued", 0) for e in answered),
        "refused_by_code": dict(refused.most_common()),
        "exchanges": len(issuer),
        "answered": len(answered),
        "failed_by_fate": dict(failed.most_common()),
    }
    latency = _pcts([e["ms"] for e in answered])

    calls = [e for e in ev if e["kind"] == "call" and e["device"] in devs]
    http_calls = [c for c in calls if c["transport"] == "http"]
    mqtt_sent = [c for c in calls if c["transport"] == "mqtt"]
    # The consumer's verdicts on the devices' own envelopes: the copies the attacker
    # published again (same digest, after the first) are its attempts, not calls.
    replayed = {e["digest"] for e in ev if e["kind"] == "attack" and e.get("digest")}
    mqtt, seen = [], set()
    for e in (e for e in ev if e["kind"] == "mqtt"):
        if e.get("digest") in replayed and e["digest"] in seen:
            continue
        seen.add(e.get("digest"))
        mqtt.append(e)
    accepted = Counter()
    rejected: Counter[str] = Counter()
    for c in http_calls:
        if 200 <= c["status"] < 300:
            accepted[c["what"]] += 1
        else:
            rejected[c["code"] or f"http_{c['status']}"] += 1
    for m in mqtt:
        if m.get("code") == "ok":
            accepted["mqtt"] += 1
        else:
            rejected[m.get("code") or "error"] += 1
    not_sent: Counter[str] = Counter()
    for e in ev:
        if e["kind"] == "device" and e.get("device") in devs:
            if e["what"] == "no_token":
                not_sent[f"no_token:{e['code']}"] += 1
            elif e["what"] == "denied":
                not_sent[f"denied:{e['code']}"] += 1
            elif e["what"] == "unreachable" and e.get("call") in ("telemetry", "poll"):
                not_sent[f"unreachable:{e['target']}"] += 1
    authorized = sum(accepted.values())
    with_token = http_calls + mqtt_sent
    hits = sum(1 for c in with_token if c["trips"] == 0)
    link_bytes = sum(e["up"] + e["down"] for e in ex)
    calls_out = {
        "attempted": len(with_token) + sum(not_sent.values()),
        "accepted": authorized,
        "accepted_by_call": dict(accepted),
        "rejected_by_code": dict(rejected.most_common()),
        "not_sent_by_reason": dict(not_sent.most_common()),
        "mqtt_published": len(mqtt_sent),
        # measured on the link (the proxy's clock), not by the device: a device's ticks may jump
        "latency_ms": _pcts([e["ms"] for e in ex if e["service"] in ("gateway", "commands")
                             and 200 <= e.get("status", 0) < 300]),
    }
    commands_sent = [e for e in ev if e["kind"] == "command_sent"]
    verdicts = Counter(e["verdict"] for e in ev if e["kind"] == "device" and e["what"] == "command")
    commands = {"sent": len(commands_sent),
                "queued": sum(1 for e in commands_sent if e["status"] == 202),
                "refused_by_code": dict(Counter(e["code"] for e in commands_sent if e["status"] != 202)),
                "device_verdicts": dict(verdicts)}
    lifecycle = Counter(e["what"] for e in ev if e["kind"] == "device"
                        and e["what"] in ("power_on", "reset", "watchdog", "crash", "wifi"))
    attacks = [{"kind": e["attack"], "target": e["target"], "outcome": e["outcome"], "code": e["code"],
                "expected": e["expected"], "victim": e["victim"], "t": e["t"]}
               for e in ev if e["kind"] == "attack"]
    skipped = [{"kind": e["attack"], "victim": e["victim"], "why": e["why"], "t": e["t"]}
               for e in ev if e["kind"] == "attack_skipped"]
    by_kind: dict[str, dict[str, int]] = {}
    for a in attacks:
        by_kind.setdefault(a["kind"], Counter())[a["code"] or a["outcome"]] += 1
    return {
        "tokens": tokens,
        "token_latency_ms": latency,
        "calls": calls_out,
        "authorized_calls": authorized,
        "cache_hit_rate": round(hits / len(with_token), 4) if with_token else None,
        "round_trips_per_authorized_call": round(len(issuer) / authorized, 4) if authorized else None,
        "bytes_per_authorized_call": round(link_bytes / authorized, 1) if authorized else None,
        "link_bytes": link_bytes,
        "commands": commands,
        "devices_lifecycle": dict(lifecycle),
        "attacks": attacks,
        "attacks_skipped": skipped,
        "attacks_by_kind": {k: dict(v) for k, v in by_kind.items()},
        "attacker_successes": sum(1 for a in attacks if a["outcome"] == "accepted"),
        "attacks_mismatched": sum(1 for a in attacks if a["code"] != a["expected"]),
    }
