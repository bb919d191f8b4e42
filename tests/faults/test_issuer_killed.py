"""Fault: the issuer is killed (SIGKILL) while devices are fetching batches of tokens.

The real issuer (`crumb issuer serve`, a child process) serves four devices
running the real ucrumb client on CPython, each fetching batches of 8
single-use tokens back to back. The issuer is frozen (SIGSTOP) at whatever
point it has reached, every device then sends a request into the frozen
issuer, and only then is the issuer killed with SIGKILL: so each device has
an exchange in flight at the kill, and the audit writer dies wherever it was.

What must hold:
- every device sees a typed failure (``issuer_unavailable``), keeps retrying
  with its backoff, and gets tokens again from the restarted issuer;
- ``crumb audit verify`` passes on the data directory afterwards;
- every token a device ever received has its issuance record in the audit
  log (the issuer never answers before the record is committed), and no
  token id was handed out twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from crumb import Verifier
from crumb.issuer import audit
from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import Keyring
from crumb.replay import MemoryReplayStore
from crumb.tooling.bench.device import BENCH_POLICY, DeviceIssuer
from ucrumb.client import Client
from ucrumb.client import CrumbError as DeviceError

from .helpers import sigkill_issuer, signal_group, wait_for

DEVICES = [f"dev-k{i}" for i in range(4)]
SCOPE = ("/sensors/temp01", "read")


class CountingClient(Client):
    """The real client; ``posting`` says whether an exchange with the issuer is in flight."""

    posting = False

    def _post(self, body, max_body):
        self.posting = True
        try:
            return super()._post(body, max_body)
        finally:
            self.posting = False


class Device(threading.Thread):
    """A device asking for one token after another: every 8th or so is a batch fetch."""

    def __init__(self, url: str, device_id: str, key: bytes) -> None:
        super().__init__(daemon=True, name=device_id)
        # A long exchange timeout: an exchange the frozen issuer holds is still waiting when it is killed.
        self.client = CountingClient(url, device_id, key, batch=8, timeout=30, backoff=0.05, max_backoff=0.2)
        self.tokens: list[tuple[bytes, float]] = []  # (token, unix time received)
        self.failures: list[tuple[str, int]] = []  # (code, len(tokens) at the time)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                tok = self.client.token(*SCOPE)
            except DeviceError as e:
                self.failures.append((e.code, len(self.tokens)))
                self.stop.wait(self.client.retry_in() / 1000)
                continue
            self.tokens.append((tok, time.time()))


# Both audit writers: the C one (signs and commits off the GIL) and the Python one (CRUMB_NATIVE=0).
WRITERS = {"native": ("1", "audit writer native:"), "python": ("0", "audit writer Python:")}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_devices_retry_through_a_killed_issuer_and_the_audit_log_holds(tmp_path, monkeypatch, writer):
    switch, banner = WRITERS[writer]
    monkeypatch.setenv("CRUMB_NATIVE", switch)  # the issuer process inherits it
    with DeviceIssuer(BENCH_POLICY, devices=dict.fromkeys(DEVICES, "sensors"), data_dir=tmp_path / "data") as iss:
        assert banner in iss.local.log_tail(), iss.local.log_tail()
        devices = [Device(iss.url, d, bytes.fromhex(iss.creds[d]["key"])) for d in DEVICES]
        for d in devices:
            d.start()
        try:
            wait_for(lambda: all(d.client.round_trips >= 4 and d.tokens for d in devices), "every device served")
            pid = iss.local.proc.pid
            signal_group(pid, signal.SIGSTOP)  # frozen wherever it is: mid-batch for the audit writer too
            before_kill = [len(d.tokens) for d in devices]
            # Each device drains its cache, then its next fetch goes into the frozen issuer.
            wait_for(lambda: all(d.client.posting for d in devices), "a request in flight from every device")
            sigkill_issuer(iss.local)
            wait_for(lambda: all(any(n >= k for _, n in d.failures) for d, k in zip(devices, before_kill)),
                     "every device to see the issuer gone")
            iss.local.start()  # the same data directory, the same port
            after = [len(d.tokens) for d in devices]
            wait_for(lambda: all(len(d.tokens) > n for d, n in zip(devices, after)),
                     "every device served by the restarted issuer")
        finally:
            for d in devices:
                d.stop.set()
            for d in devices:
                d.join(60)
        assert not any(d.is_alive() for d in devices)

        # The failures were typed, and only the ones an outage gives.
        codes = {code for d in devices for code, _ in d.failures}
        assert codes and codes <= {"issuer_unavailable"}, codes

        # The audit log: intact end to end...
        data = DataDir(iss.data_dir)
        verdict = subprocess.run([sys.executable, "-m", "crumb.cli", "audit", "verify", "--data", str(data.root)],
                                 check=False, capture_output=True, text=True, timeout=300)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        assert "chain intact" in verdict.stdout
        # ...and it holds the issuance of every token a device received.
        recorded: list[str] = []
        for path in data.audit_logs():
            for rec in audit.records(path):
                body = rec.data
                if body.get("event") == "issued":
                    recorded.extend(body["tokens"])
        assert len(recorded) == len(set(recorded)), "a token id was recorded twice"

        pub = Keyring.open(data.root / "keys", create=False).current.public
        spent = MemoryReplayStore(fence=False)
        received = [t for d in devices for t in d.tokens]
        assert len(received) > sum(before_kill)
        for tok, at in received:
            # Each token verifies at the time it was received, and is spent once: no token was handed out twice.
            v = Verifier([pub], replay=spent, clock=lambda at=at: at, leeway=0).verify(tok, *SCOPE)
            assert v.claims.cti.hex() in recorded, "a device holds a token the audit log does not record"
