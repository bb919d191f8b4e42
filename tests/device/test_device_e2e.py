"""End to end with real components: the real issuer (`crumb issuer serve`) over
HTTP, a service verifying every call with crumb.Verifier (keys from GET /keys),
device credentials written by the real `crumb device add`, and the device code
running on CPython and inside the MicroPython VM (through its socket bridge).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time

import pytest
import runtimes
from inproc_issuer import InProcessIssuer

from crumb.tooling.bench.device import BENCH_POLICY, DeviceIssuer, VerifyingService

MODULE = "netcases.e2e"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))

POLICY = "[issuer]\nmax_skew = 60\n\n" + BENCH_POLICY  # the bench's policy, with a tight clock


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with DeviceIssuer(POLICY, devices={}, data_dir=tmp_path_factory.mktemp("issuer")) as iss:
        yield iss


@pytest.fixture(scope="module")
def service(issuer):
    with VerifyingService(issuer.url) as svc:
        yield svc


def enroll(issuer, device_id: str, out, policy_text: str = POLICY) -> str:
    """`crumb device add` (the real CLI) against the running issuer's data dir; the file's text."""
    policy = out.parent / "policy.toml"
    policy.write_text(policy_text)
    subprocess.run([sys.executable, "-m", "crumb.cli", "device", "add", device_id, "--group", "sensors",
                    "--data", str(issuer.data_dir), "--config", str(policy), "--url", issuer.url,
                    "--out", str(out)], check=True, capture_output=True, timeout=60)
    return out.read_text()


@pytest.fixture(scope="module")
def cpython_arg(issuer, service, tmp_path_factory):
    out = tmp_path_factory.mktemp("cred") / "crumb.json"
    text = enroll(issuer, "dev-cpython", out)
    return f"{service.url}|{out}|{text}"


@pytest.mark.parametrize("case", CASES)
def test_cpython(case, cpython_arg):
    m.setup(cpython_arg)
    getattr(m, case)()


@pytest.fixture(scope="module")
def results(vm, issuer, service, tmp_path_factory):
    def arg_for(runtime):
        out = tmp_path_factory.mktemp("cred") / "crumb.json"
        text = enroll(issuer, "dev-" + runtime, out)
        assert json.loads(text)["issuer"] == issuer.url
        # the VM cannot read the host's file: the case writes the text to its own /crumb.json
        return f"{service.url}|{'/crumb.json' if runtime == 'vm' else out}|{text}"

    return runtimes.results(vm, tmp_path_factory, MODULE, arg_for)


test_micropython = runtimes.case_tests(MODULE, CASES)


def test_every_accepted_call_was_verified(service, results, cpython_arg):
    # Every runtime's calls went through the verifier (and nothing was waved through).
    for runtime in runtimes.RUNTIMES:
        results(runtime)
    assert service.accepted >= 4 * 16
    assert service.rejected.get("replayed", 0) >= 2 and service.rejected.get("scope_denied", 0) >= 2


def test_issuer_clock_jump(tmp_path):
    # The issuer's clock (and the verifier's with it) jumps an hour: the device,
    # synced before, is refused once with stale_time, resyncs and carries on.
    # (The issuer runs in this process so that the test can move its clock.)
    from ucrumb import client

    with InProcessIssuer(POLICY, devices={}, data_dir=tmp_path / "data") as issuer, \
            VerifyingService(issuer.url, clock=lambda: time.time() + issuer.skew) as service:
        enroll(issuer, "dev-clock", tmp_path / "crumb.json")
        c = client.from_file(tmp_path / "crumb.json", batch=1)
        assert c.request("GET", service.url + "/sensors/x", "/sensors/x", "read")[0] == 200
        assert c.round_trips == 2
        issuer.skew = 3600
        before = time.time()
        status, _, body = c.request("GET", service.url + "/sensors/x", "/sensors/x", "read")
        assert status == 200, body
        # The device's clock is the issuer's, read during the call, plus the ticks since (each in whole seconds):
        # bounded by the times around the call, however long the call took.
        assert c.round_trips == 4 and before + 3600 - 2 <= c.now() <= time.time() + 3600 + 1
        # (Not tested: a jump back. The issuer's in-memory rate limiter then holds the
        # device for the length of the jump; the device sees rate_limited, backs off.)


def test_mqtt_envelope_through_mosquitto(issuer, cpython_arg):
    # Client.publish() with a paho client (same publish(topic, msg, retain=, qos=)
    # as umqtt.simple) through a real broker to crumb's MQTT consumer.
    import paho.mqtt.client as mqtt

    from crumb.replay import MemoryReplayStore
    from crumb.services.keyfetch import FetchedKeys
    from crumb.services.mqtt import MqttConsumer
    from crumb.tooling.localservices import MosquittoServer
    from crumb.verify import Verifier
    from ucrumb import client

    got = []
    _, path, _ = cpython_arg.split("|", 2)
    c = client.from_file(path)
    with MosquittoServer() as broker:
        # A consumer started for this test: no earlier life to fence off (tokens come right after it starts).
        verifier = Verifier([], resolver=FetchedKeys(issuer.url + "/keys", min_interval=0.0),
                            replay=MemoryReplayStore(fence=False))
        consumer = MqttConsumer(verifier, lambda topic, payload, grant: got.append((topic, payload, grant.sub)),
                                "sensors/#", host=broker.host, port=broker.port, resource=lambda t: "/" + t).start()
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            for i in range(3):
                c.publish(pub, "sensors/temp01", b"21.%d" % i, resource="/sensors/temp01", qos=1)
            c.publish(pub, "sensors/temp01", b"wrong scope", resource="/sensors/other", qos=1)
            assert consumer.wait_processed(4, timeout=60)  # generous: ends when the 4 are through
        finally:
            pub.loop_stop()
            pub.disconnect()
            consumer.stop()
    assert got == [("sensors/temp01", b"21.%d" % i, "dev-cpython") for i in range(3)]
    assert consumer.rejected == {"scope_denied": 1}
