"""The run's record: every figure of the report is computed from these events.

An event is a dict with ``t`` (seconds since the run started, by the
simulator's monotonic clock), ``kind`` and fields of its own. The kinds:

==============  ===========================================================================
``exchange``    one connection through the proxy: ``device``, ``service``, ``fate``, ``ms``,
                ``up``/``down`` bytes, ``status``, ``code``; for the issuer also
                ``requested``, ``issued`` (tokens)
``call``        the application's report of one call (from its ``log``): ``device``,
                ``what`` (telemetry, poll), ``transport``, ``status``, ``code``, ``ms``,
                ``trips`` (issuer round trips the call needed: 0 is a cache hit)
``device``      ``device``, ``what`` (boot, no_token, denied, unreachable, wifi, watchdog,
                crash, command, …) and its fields
``mqtt``        the MQTT consumer's verdict on one message: ``device``, ``code`` ("ok" or
                the refusal), ``digest``
``command_sent`` the operator's command: ``device``, ``op``, ``status``, ``code``
``fault``       ``fault``, ``phase`` (start, end), details
``attack``      ``attack`` (its kind), ``target``, ``outcome``, ``code``, ``expected``, ``victim``
==============  ===========================================================================

Appending is thread-safe (one lock); the list is only read after the run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}  # live counters for the progress display

    def start(self) -> None:
        """The run starts now: times count from here."""
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, kind: str, **fields: Any) -> None:
        ev = {"t": round(time.monotonic() - self.t0, 4), "kind": kind, **fields}
        with self._lock:
            self.events.append(ev)

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def of(self, *kinds: str) -> Iterable[dict[str, Any]]:
        return (e for e in self.events if e["kind"] in kinds)

    def write(self, path: Path) -> None:
        with open(path, "w") as f:
            f.writelines(json.dumps(e, default=str) + "\n" for e in sorted(self.events, key=lambda e: e["t"]))
