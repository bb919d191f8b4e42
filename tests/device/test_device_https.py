"""The device client over https, end to end (tests/device/netcases/https.py).

The real issuer and a real verifying service serve https with a test CA;
a misbehaving issuer serves https too, and a listener never answers the
handshake. The same cases run on CPython (its ssl module), inside the
MicroPython VM (a real TLS session through the socket bridge, presented to
the device code with the TLS socket of MicroPython >= 1.25: recv and send,
no settimeout) and on a real MicroPython unix port with mbedTLS, from
sources and from .mpy files.
"""

from __future__ import annotations

import importlib
import json
import socket

import pytest
import runtimes
from badissuer import BadIssuer
from inproc_issuer import InProcessIssuer
from tlspeers import make_pki

from crumb.tooling.bench.device import DEVICE_ID, VerifyingService

MODULE = "netcases.https"
m = importlib.import_module(MODULE)
CASES = sorted(n for n in dir(m) if n.startswith("test_"))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    d = tmp_path_factory.mktemp("https")
    pki = make_pki(d)
    silent = socket.socket()  # accepts connections (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        with InProcessIssuer(tls=(pki.certfile, pki.keyfile)) as issuer, \
                VerifyingService(issuer.url, tls=pki.server_context(), issuer_ca=pki.ca_pem) as service, \
                BadIssuer(tls=pki.server_context()) as bad:
            cred = issuer.creds[DEVICE_ID]
            cfg = {"issuer": issuer.url, "service": service.url, "bad": bad.url,
                   "no_handshake": f"https://127.0.0.1:{silent.getsockname()[1]}",
                   "device_id": DEVICE_ID, "key": cred["key"], "ca_pem": pki.ca_pem, "ca_der": pki.ca_der.hex(),
                   "other_pem": pki.other_pem}
            (d / "https.json").write_text(json.dumps(cfg))
            yield d
    finally:
        silent.close()


@pytest.mark.parametrize("case", CASES)
def test_cpython(case, config):
    m.setup(str(config / "https.json"))
    getattr(m, case)()


@pytest.fixture(scope="module")
def results(vm, config, tmp_path_factory):
    return runtimes.results(vm, tmp_path_factory, MODULE,
                            lambda runtime: "/https/https.json" if runtime == "vm" else str(config / "https.json"),
                            extra_paths=[f"{config}:/https"])


test_micropython = runtimes.case_tests(MODULE, CASES)
