"""CoAP end to end with real components: the real issuer (`crumb issuer serve --coap`), a CoAP service
verifying every request (crumb.services.coap.CoapGuard, keys from GET /keys), and the device code on
CPython, inside the MicroPython VM (UDP through its network bridge) and on the unix port; then the same
cases through a proxy losing and duplicating 10 % of the datagrams each way (deterministic by seed)."""

from __future__ import annotations

import importlib

import pytest
import runtimes
from coappeers import CoapService, LossyProxy

from crumb.tooling.bench.device import BENCH_POLICY, DeviceIssuer

MODULE = "netcases.coap"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))
ACK_MS = 300  # ACK_TIMEOUT for these runs: RFC 7252's 2 s would make each lost datagram cost seconds
DEVICES = {f"dev-{r}-{w}": "sensors" for r in ("cpython", *runtimes.RUNTIMES) for w in ("direct", "lossy")}


class CoapIssuer(DeviceIssuer):
    args = ("--coap", "--coap-port", "0")


@pytest.fixture(scope="module")
def issuer():
    with CoapIssuer(BENCH_POLICY, devices=DEVICES) as iss:
        assert iss.local.coap_port
        iss.coap_url = f"coap://127.0.0.1:{iss.local.coap_port}"
        yield iss


@pytest.fixture(scope="module")
def service(issuer):
    with CoapService(issuer.url) as svc:
        yield svc


@pytest.fixture(scope="module")
def proxies(issuer, service):
    with LossyProxy(issuer.local.coap_port, seed=18) as ip, LossyProxy(service.port, seed=7252) as sp:
        yield ip, sp


def arg(issuer, service, proxies, runtime: str, way: str) -> str:
    dev = f"dev-{runtime}-{way}"
    iurl, surl = (issuer.coap_url, service.url) if way == "direct" else (proxies[0].url, proxies[1].url)
    return f"{iurl}|{surl}|{ACK_MS}|{dev}|{issuer.creds[dev]['key']}"


@pytest.fixture
def restore_coap():
    from ucrumb import coap

    saved = coap.ACK_TIMEOUT
    yield
    coap.ACK_TIMEOUT = saved


@pytest.mark.parametrize("way", ["direct", "lossy"])
@pytest.mark.parametrize("case", CASES)
def test_cpython(case, way, issuer, service, proxies, restore_coap):
    m.setup(arg(issuer, service, proxies, "cpython", way))
    getattr(m, case)()


@pytest.fixture(scope="module")
def results(vm, issuer, service, proxies, tmp_path_factory):
    cache: dict = {}

    def get(key):
        if key not in cache:
            runtime, way = key
            cache[key] = runtimes.run(vm, runtime, MODULE, arg(issuer, service, proxies, runtime, way),
                                      tmp_path_factory)
        return cache[key]

    return get


@pytest.mark.parametrize("way", ["direct", "lossy"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_micropython(runtime, way, case, results):
    runtimes.check(results((runtime, way)), f"{MODULE}.{case}", runtime)


def test_the_proxies_lost_and_duplicated(proxies, results):
    # The lossy runs really met loss and duplication both ways (else they would prove nothing).
    for runtime in runtimes.RUNTIMES:
        results((runtime, "lossy"))
    for p in proxies:
        print(f"proxy to :{p.target[1]}: forwarded {p.forwarded}, dropped {p.dropped}, duplicated {p.duplicated}")
        assert p.dropped > 0 and p.duplicated > 0 and p.forwarded > 0, (p.dropped, p.duplicated, p.forwarded)
