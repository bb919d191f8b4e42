"""Certificates for the device's https tests: a test CA, a server certificate it
signed, and a second CA that signed nothing the servers present.

The server certificate names 127.0.0.1 as an IP address (what OpenSSL and
Node.js check) and also as a DNS name: mbedTLS 2.28, the system mbedTLS the
real unix port is built against here, compares the host name with DNS names
only.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PKI:
    ca_pem: str
    ca_der: bytes
    other_pem: str  # a CA that signed nothing the servers present
    certfile: Path  # server certificate + CA, PEM
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


def _ca_and_leaf(tmp_path: Path, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

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
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key, ca_key, False,
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("127.0.0.1"),
                 x509.DNSName("localhost")])
    certfile, keyfile = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    certfile.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return (ca.public_bytes(serialization.Encoding.PEM).decode(), ca.public_bytes(serialization.Encoding.DER),
            certfile, keyfile)


def make_pki(tmp_path: Path) -> PKI:
    ca_pem, ca_der, certfile, keyfile = _ca_and_leaf(tmp_path, "good")
    other_pem = _ca_and_leaf(tmp_path, "other")[0]
    return PKI(ca_pem, ca_der, other_pem, certfile, keyfile)
