"""The simulator's device workload as a Locust ``User``, to load-test a deployed issuer and services.

    locust -f examples/locustfile.py --headless -u 50 -r 10 -t 60s

Each Locust user is one device: it takes the next credentials file from
``CRUMB_CREDENTIALS`` (files from ``crumb device add``, one per device), gets
its tokens with ucrumb (the device code itself, on gevent's sockets) and
sends readings through the chain's gateway, and, with ``CRUMB_COMMANDS``,
polls the command service, like ``firmware/crumb_app.py`` does:

==================  =====================================================================
CRUMB_CREDENTIALS   folder of device credential files (required); a user per file, reused
                    in turn if there are more users than files
CRUMB_GATEWAY       base URL of the chain's gateway (required): POST /sensors/ID/readings
CRUMB_COMMANDS      base URL of the command service: GET /valves/ID/commands (optional)
CRUMB_EVERY         seconds between one device's readings (default 2)
CRUMB_BATCH         tokens per issuer round trip (default 4; 1: one token per call)
==================  =====================================================================

``--host`` overrides the issuer URL written in the credentials. Locust's
statistics get three request types: ``token`` (an issuer round trip, timed by
itself), ``reading`` and ``poll`` (the call with its token; failed when the
service refuses it, the failure naming the service's code).

Distributed (Locust's own master/worker mode), each worker with its own
devices so no two workers share a device's nonces and rate limit::

    locust -f examples/locustfile.py --master --expect-workers 2 --headless -u 400 -r 40 -t 5m
    CRUMB_CREDENTIALS=creds/worker1 CRUMB_GATEWAY=http://gw:8101 \\
        locust -f examples/locustfile.py --worker --master-host MASTER
    CRUMB_CREDENTIALS=creds/worker2 CRUMB_GATEWAY=http://gw:8101 \\
        locust -f examples/locustfile.py --worker --master-host MASTER
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from locust import User, constant_pacing, task

_counter = itertools.count()


def _credentials() -> list[dict]:
    folder = os.environ.get("CRUMB_CREDENTIALS")
    if not folder:
        raise RuntimeError("set CRUMB_CREDENTIALS to a folder of device files from `crumb device add`")
    files = sorted(Path(folder).glob("*.json"))
    docs = [json.loads(f.read_text()) for f in files]
    docs = [d for d in docs if d.get("group") != "operators"]
    if not docs:
        raise RuntimeError(f"no device credentials (*.json) in {folder}")
    return docs


def _code(body: bytes) -> str:
    try:
        return json.loads(body).get("code") or ""
    except (ValueError, AttributeError):
        return ""


class CrumbDevice(User):
    """One device: a reading every CRUMB_EVERY seconds (and a command poll with CRUMB_COMMANDS)."""

    wait_time = constant_pacing(float(os.environ.get("CRUMB_EVERY", "2")))

    def on_start(self) -> None:
        from ucrumb.client import Client

        creds = _credentials()
        doc = creds[next(_counter) % len(creds)]
        self.id = doc["device_id"]
        issuer = self.host or doc["issuer"]
        self.crumb = Client(issuer, self.id, bytes.fromhex(doc["key"]), batch=int(os.environ.get("CRUMB_BATCH", "4")),
                             timeout=5)
        self.gateway = os.environ["CRUMB_GATEWAY"].rstrip("/")
        self.commands = os.environ.get("CRUMB_COMMANDS", "").rstrip("/")

    def _fire(self, kind: str, name: str, t0: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(request_type=kind, name=name, response_time=(time.perf_counter() - t0) * 1000,
                                             response_length=length, exception=exc, context={})

    def _call(self, kind: str, method: str, url: str, resource: str, operation: str, body: bytes | None,
              ok: int) -> None:
        from ucrumb import http
        from ucrumb.client import CrumbError

        trips = self.crumb.round_trips
        t0 = time.perf_counter()
        try:
            auth = self.crumb.header(resource, operation)
        except CrumbError as e:
            self._fire("token", resource, t0, 0, e)
            return
        if self.crumb.round_trips != trips:  # an issuer round trip: timed on its own
            self._fire("token", resource, t0, 0, None)
        t1 = time.perf_counter()
        try:
            status, _, data = http.request(method, url, body, {"Authorization": auth, "Content-Type": "application/json"}, 5)
        except OSError as e:
            self._fire(kind, resource, t1, 0, e)
            return
        exc = None if status == ok else RuntimeError(f"HTTP {status} {_code(data)}".strip())
        self._fire(kind, resource, t1, len(data), exc)

    @task
    def reading(self) -> None:
        res = f"/sensors/{self.id}"
        self._call("reading", "POST", f"{self.gateway}{res}/readings", res, "publish", b'{"value": 21.5}', 201)
        if self.commands:
            valve = f"/valves/{self.id}"
            self._call("poll", "GET", f"{self.commands}{valve}/commands?after=0", valve, "read", None, 200)
