"""Proof of possession end to end (PROTOCOL.md §4.4, §11.9, §12.1): the real issuer
(`crumb issuer serve --coap`) with a `pop` rule, services that are the tokens' first hop
(crumb.Verifier holding its node key): one over HTTP, one over CoAP (CoapGuard, the
proof in option 65007), device credentials from the real `crumb device add`, and the
device code on CPython and on every MicroPython runtime (netcases/pop.py). On the VM,
AES-CCM runs on the pure-Python AES; on the unix port, on its cryptolib.
"""

from __future__ import annotations

import importlib
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import runtimes
from coappeers import CoapService
from test_device_e2e import enroll

from crumb.keys import SigningKey, b64u
from crumb.replay import MemoryReplayStore
from crumb.services.keyfetch import FetchedKeys
from crumb.tooling.bench.device import DeviceIssuer, VerifyingService
from crumb.verify import Verifier

MODULE = "netcases.pop"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))

HOP = SigningKey(bytes(range(100, 132)))  # the service's node key: the first hop, cnf is encrypted to it

POLICY = f"""\
[issuer]
max_skew = 60

[defaults]
ttl = 60
batch = 8
rate = 1000.0
burst = 1000

[nodes]
ingest = "{b64u(HOP.public.raw)}"

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read", "publish"]
pop = "token"
pop_node = "ingest"
"""


class CoapIssuer(DeviceIssuer):
    args = ("--coap", "--coap-port", "0")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    with CoapIssuer(POLICY, devices={"dev-other": "sensors"}, data_dir=tmp_path_factory.mktemp("issuer")) as iss:
        yield iss


@pytest.fixture(scope="module")
def service(issuer):
    with VerifyingService(issuer.url, pop_key=HOP) as svc:
        yield svc


@pytest.fixture(scope="module")
def coap_service(issuer):
    verifier = Verifier([], resolver=FetchedKeys(issuer.url.rstrip("/") + "/keys", min_interval=0.0),
                        replay=MemoryReplayStore(fence=False), pop_key=HOP)
    with CoapService(issuer.url, verifier=verifier) as svc:
        yield svc


def _urls(issuer, coap_service) -> str:
    return f"coap://127.0.0.1:{issuer.local.coap_port}|{coap_service.url}"


def _enroll(issuer, name: str, out) -> str:
    return enroll(issuer, name, out, POLICY)


@pytest.fixture(scope="module")
def cpython_arg(issuer, service, coap_service, tmp_path_factory):
    out = tmp_path_factory.mktemp("cred") / "crumb.json"
    text = _enroll(issuer, "dev-cpython", out)
    return f"{service.url}|{_urls(issuer, coap_service)}|{issuer.creds['dev-other']['key']}|{out}|{text}"


@pytest.mark.parametrize("case", CASES)
def test_cpython(case, cpython_arg):
    m.setup(cpython_arg)
    getattr(m, case)()


@pytest.fixture(scope="module")
def results(vm, issuer, service, coap_service, tmp_path_factory):
    # The unix port reads the credential file where it is, and aborts on an argument of 256 bytes
    # or more, which the credential text would make this one: the text goes only to the VM, which
    # cannot read the host's files. So the unix ports' files live in a directory of this module's
    # own, which no other pytest session's clean-up of /tmp/pytest-of-USER can remove under them.
    with tempfile.TemporaryDirectory(prefix="crumb-pop-") as own:
        def arg_for(runtime):
            out = (Path(own) if runtime != "vm" else tmp_path_factory.mktemp("cred")) / f"{runtime}.json"
            text = _enroll(issuer, "dev-" + runtime, out)
            urls = f"{service.url}|{_urls(issuer, coap_service)}|{issuer.creds['dev-other']['key']}"
            if runtime != "vm":
                return f"{urls}|{out}|"
            return f"{urls}|/crumb.json|{text}"

        yield runtimes.results(vm, tmp_path_factory, MODULE, arg_for)


test_micropython = runtimes.case_tests(MODULE, CASES)


def test_every_refusal_was_pop_failed(service, coap_service, results, cpython_arg):
    for runtime in runtimes.RUNTIMES:
        results(runtime)
    # three refused calls per runtime (no proof, another body, no proof in the envelope), all pop_failed
    assert service.rejected == {"pop_failed": 3 * (len(runtimes.RUNTIMES) + 1)}
    # over CoAP four (no proof option, another payload, another path, no proof in the envelope)
    refused: Counter[str] = sum((g.rejected for g in coap_service.guards), Counter())
    assert refused == {"pop_failed": 4 * (len(runtimes.RUNTIMES) + 1)}, refused
