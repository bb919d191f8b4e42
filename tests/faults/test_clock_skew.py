"""Fault: clocks off by more than they may be, on the device and on the verifying services.

The real issuer (`crumb issuer serve`, max_skew 30 s) and the real ucrumb
client on CPython. The device has no wall clock: its time is the issuer's
last time plus its ticks since, so its clock goes wrong when its ticks do;
the tests move the client's ticks. The services are real verifier processes
(verifier_app.py) whose clock is moved by a fixed offset.

Codes: the issuer refuses a device time off by more than max_skew with
``stale_time`` (and its own time, from which the device resyncs and retries
once); a device whose clock is wrong again right after the resync raises
ClockUnsynced (``stale_time``). A service whose clock is past a token's
``exp`` plus its leeway refuses ``expired``; one behind the token's ``iat``
by more than its leeway refuses ``not_yet_valid``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

import ucrumb.client as uclient
from crumb.issuer import audit
from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import Keyring
from crumb.tooling.bench.device import BENCH_POLICY, DeviceIssuer
from crumb.tooling.localservices import UvicornProcess
from ucrumb import http as uhttp

HERE = Path(__file__).parent
MAX_SKEW = 30
POLICY = f"[issuer]\nmax_skew = {MAX_SKEW}\n\n" + BENCH_POLICY  # tokens live 60 s
LEEWAY = 5  # the services' leeway, set explicitly
DEVICES = ("dev-s1", "dev-s2", "dev-s3", "dev-s4")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with DeviceIssuer(POLICY, devices=dict.fromkeys(DEVICES, "sensors"),
                      data_dir=tmp_path_factory.mktemp("issuer")) as iss:
        yield iss


class Ticks:
    """The device's ticks, moved by ``offset_ms``; ``step_ms`` more on every read (a clock gone wild)."""

    def __init__(self) -> None:
        self.offset_ms = 0
        self.step_ms = 0

    def __call__(self) -> int:
        self.offset_ms += self.step_ms
        return uhttp.ticks_add(uhttp.ticks_ms(), self.offset_ms)


@pytest.fixture
def ticks(monkeypatch):
    t = Ticks()
    monkeypatch.setattr(uclient, "ticks_ms", t)  # the client's clock and cache; its sockets keep real time
    return t


def client(issuer, device: str) -> uclient.Client:
    return uclient.Client(issuer.url, device, bytes.fromhex(issuer.creds[device]["key"]), batch=1)


def refusals(issuer, device: str) -> list[str]:
    out = []
    for path in DataDir(issuer.data_dir).audit_logs():
        for rec in audit.records(path):
            body = rec.data
            if body.get("device") == device and body.get("event") == "refused":
                out.append(body["code"])
    return out


@pytest.mark.parametrize("offset_s", [3600, -3600, 2 * MAX_SKEW, -2 * MAX_SKEW])
def test_a_device_clock_off_beyond_max_skew_is_refused_then_resyncs(issuer, ticks, offset_s):
    device = DEVICES[0]
    c = client(issuer, device)
    c.token("/sensors/a", "read")  # boot: time 0 is stale_time, synced, retried
    assert c.round_trips == 2
    before = refusals(issuer, device)
    ticks.offset_ms += offset_s * 1000  # the ticks jump: the device's clock is off by offset_s
    c.token("/sensors/b", "read")
    assert c.round_trips == 4  # refused, resynced from the refusal, served
    assert refusals(issuer, device)[len(before):] == ["stale_time"]
    c.token("/sensors/c", "read")
    assert c.round_trips == 5  # synced: served at once


def test_a_device_clock_off_within_max_skew_is_served(issuer, ticks):
    device = DEVICES[1]
    c = client(issuer, device)
    c.token("/sensors/a", "read")
    before = refusals(issuer, device)
    ticks.offset_ms += (MAX_SKEW - 10) * 1000
    c.token("/sensors/b", "read")
    assert c.round_trips == 3 and refusals(issuer, device) == before


def test_a_device_clock_that_will_not_hold_raises_clock_unsynced(issuer, ticks):
    device = DEVICES[2]
    c = client(issuer, device)
    c.token("/sensors/a", "read")
    ticks.step_ms = 3600 * 1000  # every read of the ticks is an hour later: wrong again right after a resync
    with pytest.raises(uclient.ClockUnsynced) as e:
        c.token("/sensors/b", "read")
    assert e.value.code == "stale_time"
    ticks.step_ms = 0  # the ticks behave again: the next call resyncs and is served
    ticks.offset_ms = 0
    assert c.token("/sensors/b", "read")


def bearer(token: bytes) -> dict[str, str]:
    return {"Authorization": "Bearer " + base64.urlsafe_b64encode(token).rstrip(b"=").decode()}


# (the service's clock offset in seconds, the status and code a fresh 60 s token gets)
SERVICE_SKEWS = {
    "synced": (0, 201, ""),
    "behind within the leeway": (-(LEEWAY - 3), 201, ""),
    "behind beyond the leeway": (-(LEEWAY + 30), 401, "not_yet_valid"),
    "ahead beyond exp and leeway": (60 + LEEWAY + 30, 401, "expired"),
}


@pytest.mark.parametrize("case", list(SERVICE_SKEWS))
def test_a_service_clock_off_beyond_its_leeway_refuses_with_the_code(issuer, case):
    skew, status, code = SERVICE_SKEWS[case]
    key = Keyring.open(Path(issuer.data_dir) / "keys", create=False).current.public
    # No restart fence: the token is issued right after the service starts, and the fence is not what this tests.
    env = {"CRUMB_FAULT_ISSUER": key.raw.hex(), "CRUMB_FAULT_LEEWAY": str(LEEWAY), "CRUMB_FAULT_SKEW": str(skew),
           "CRUMB_FAULT_FENCE": "0"}
    c = client(issuer, DEVICES[3])
    with UvicornProcess("verifier_app:app", app_dir=HERE, env=env, name="verifier") as svc:
        r = httpx.post(svc.url + "/sensors/temp01/readings", headers=bearer(c.token("/sensors/temp01", "publish")),
                       timeout=30)
    assert r.status_code == status, r.text
    if code:
        assert json.loads(r.text)["code"] == code
