"""The device client over https to the real issuer (CPython's ssl; the VM's
MicroPython port has no TLS, tls_cases.py covers the MicroPython code path).
Certificate verification is on by default and configurable."""

from __future__ import annotations

import datetime
import ipaddress

import pytest

from crumb.bench.device import DEVICE_ID
from inproc_issuer import InProcessIssuer
from ucrumb import client
from ucrumb.http import HTTPError, request


def _ca_and_leaf(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, ca, san=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]), ca_name, key, ca_key, False,
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    certfile, keyfile = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    certfile.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return (ca.public_bytes(serialization.Encoding.PEM).decode(), ca.public_bytes(serialization.Encoding.DER),
            certfile, keyfile)


@pytest.fixture(scope="module")
def tls_issuer(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca_pem, ca_der, certfile, keyfile = _ca_and_leaf(d, "good")
    other_pem = _ca_and_leaf(d, "other")[0]
    with InProcessIssuer(tls=(certfile, keyfile)) as iss:
        yield iss, ca_pem, ca_der, other_pem


def device(iss, **kw):
    cred = iss.creds[DEVICE_ID]
    return client.Client(cred["issuer"], DEVICE_ID, bytes.fromhex(cred["key"]), timeout=3, **kw)


def test_https_with_the_issuers_ca(tls_issuer):
    iss, ca_pem, ca_der, _ = tls_issuer
    assert iss.url.startswith("https://")
    for cadata in (ca_pem, ca_der):
        c = device(iss, cadata=cadata)
        assert len(c.token("/sensors/temp01", "read")) > 100
        assert c.round_trips == 2


def test_verification_is_on_by_default(tls_issuer):
    iss = tls_issuer[0]
    c = device(iss)  # cadata=None: the system CAs, which do not know this issuer
    e = pytest.raises(client.IssuerUnavailable, c.token, "/sensors/temp01", "read").value
    assert "CERTIFICATE_VERIFY_FAILED" in str(e)


def test_wrong_ca_is_refused(tls_issuer):
    iss, _, _, other_pem = tls_issuer
    e = pytest.raises(client.IssuerUnavailable, device(iss, cadata=other_pem).token, "/sensors/temp01", "read").value
    assert "CERTIFICATE_VERIFY_FAILED" in str(e)


def test_explicit_opt_out(tls_issuer):
    iss = tls_issuer[0]
    assert device(iss, cadata=False).token("/sensors/temp01", "read")


def test_plain_http_to_a_tls_port_fails_cleanly(tls_issuer):
    iss = tls_issuer[0]
    with pytest.raises(HTTPError):
        request("POST", iss.url.replace("https://", "http://") + "/token", b"x", None, 2)
