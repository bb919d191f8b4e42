"""Prometheus text exposition (format 0.0.4) for one issuer process.

Counters are per process; with several processes, scrape each (or sum them).
"""

from __future__ import annotations

import bisect

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.tokens_issued = 0
        self.refusals: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.policy_reloads = 0
        self.policy_reload_errors = 0

    def request(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def refused(self, code: str) -> None:
        self.refusals[code] = self.refusals.get(code, 0) + 1

    def token(self, status: int, seconds: float) -> None:
        """A token request answered with ``status`` after ``seconds``: counted, and its latency observed."""
        key = ("token", status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self, more: dict[str, tuple[str, str, list[tuple[dict, float]]]] | None = None) -> str:
        """The exposition text; ``more`` adds families: name -> (type, help, samples). A name
        ending in _total is a counter (it only increases), anything else a gauge."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                out.append(f"{name}{{{text}}} {_num(value)}" if text else f"{name} {_num(value)}")

        family("crumb_issuer_requests_total", "counter", "HTTP requests by endpoint and status.",
               [({"endpoint": e, "status": s}, n) for (e, s), n in sorted(self.requests.items())])
        family("crumb_issuer_tokens_issued_total", "counter", "Tokens issued.", [({}, self.tokens_issued)])
        family("crumb_issuer_refusals_total", "counter", "Token requests refused, by stable error code.",
               [({"code": c}, n) for c, n in sorted(self.refusals.items())])
        name = "crumb_issuer_token_request_duration_seconds"
        out.append(f"# HELP {name} Time to answer POST /token, audit commit included.")
        out.append(f"# TYPE {name} histogram")
        running = 0
        for bound, n in zip(LATENCY_BUCKETS, self.buckets):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.latency_count}')
        out.append(f"{name}_sum {_num(self.latency_sum)}")
        out.append(f"{name}_count {self.latency_count}")
        family("crumb_issuer_policy_reloads_total", "counter", "Policy file reloads applied.",
               [({}, self.policy_reloads)])
        family("crumb_issuer_policy_reload_errors_total", "counter",
               "Policy file changes refused (the previous policy stays in force).", [({}, self.policy_reload_errors)])
        for name, (kind, help_, samples) in (more or {}).items():
            family(name, kind, help_, samples)
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
