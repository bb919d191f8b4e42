"""A device's life from the command line: rekey, bulk enrolment, secrets written 0600, and every
change in the audit log (crumb.issuer.devices)."""

from __future__ import annotations

import json
import os
import stat

from crumb.issuer import audit
from crumb.issuer.datadir import DataDir
from crumb.issuer.devices import Lifecycle
from crumb.issuer.protocol import derive_device_key
from crumb.issuer.registry import Registry
from crumb.tooling.issuerclient import Credentials, IssuerClient

from .conftest import crumb_cli, start_issuer
from .policies import POLICY

SCOPE = [("/sensors/temp01", "read")]


def events(data) -> list[dict]:
    """Every lifecycle event in every chain of the data dir, oldest first."""
    out = []
    for path in DataDir(data).audit_logs():
        assert audit.verify(path).ok
        out += [r.data for r in audit.records(path) if r.data.get("event") not in ("issued", "refused")]
    return sorted(out, key=lambda d: d["t"])


def test_rekey_while_serving_the_old_key_gets_bad_mac_the_new_one_a_token(tmp_path):
    issuer, config = start_issuer(tmp_path)
    try:
        data = str(issuer.data)
        old = Credentials.from_json(crumb_cli("device", "add", "dev-rk", "--group", "sensors", "--data", data,
                                              "--config", str(config), check=True).stdout)
        before = IssuerClient(Credentials(old.device_id, old.key, issuer.url))
        assert before.request(SCOPE).tokens
        r = crumb_cli("device", "rekey", "dev-rk", "--data", data, "--config", str(config), check=True)
        new = Credentials.from_json(r.stdout)
        assert new.key != old.key and "key generation 1" not in r.stdout  # the file only, on stdout
        master = bytes.fromhex((issuer.data / "master.key").read_text().strip())
        assert new.key == derive_device_key(master, "dev-rk", 1) != derive_device_key(master, "dev-rk")
        refused = before.request(SCOPE)  # the very next request
        assert refused.code == "bad_mac" and not refused.tokens
        after = IssuerClient(Credentials(new.device_id, new.key, issuer.url))
        assert after.request(SCOPE).tokens
        # Twice: generation 2, and generation 1 stops working in turn.
        newer = Credentials.from_json(crumb_cli("device", "rekey", "dev-rk", "--data", data, check=True).stdout)
        assert after.request(SCOPE).code == "bad_mac"
        assert IssuerClient(Credentials(newer.device_id, newer.key, issuer.url)).request(SCOPE).tokens
        # Enrolling again gives the current key, not the first one.
        again = Credentials.from_json(crumb_cli("device", "add", "dev-rk", "--group", "sensors", "--data", data,
                                                check=True).stdout)
        assert again.key == newer.key
        for c in (before, after):
            c.close()
    finally:
        issuer.close()
    got = [(e["event"], e["device"], e.get("keygen")) for e in events(data)]
    assert got == [("enrolled", "dev-rk", 0), ("rekeyed", "dev-rk", 1), ("rekeyed", "dev-rk", 2),
                   ("re-enrolled", "dev-rk", 2)]
    listing = crumb_cli("device", "list", "--data", data, check=True).stdout
    assert "dev-rk" in listing and "key #2" in listing


def test_rekey_refuses_a_revoked_device_and_bad_ids(tmp_path):
    d = str(tmp_path)
    crumb_cli("device", "add", "dev-x", "--data", d, check=True)
    crumb_cli("device", "revoke", "dev-x", "--data", d, check=True)
    r = crumb_cli("device", "rekey", "dev-x", "--data", d)
    assert r.returncode == 2 and "revoked" in r.stderr and not r.stdout
    assert crumb_cli("device", "rekey", "bad id", "--data", d).returncode == 2
    assert [e["event"] for e in events(d)] == ["enrolled", "revoked"]


def test_rekey_of_a_device_known_only_from_the_policy(tmp_path):
    data = DataDir(tmp_path).create()
    with Lifecycle(data) as life:
        creds, keygen = life.rekey("dev-policy")
        assert keygen == 1 and life.existing("dev-policy") is None  # still not enrolled
    registry = Registry(data.registry)
    try:
        assert registry.keygens == {"dev-policy": 1} and "dev-policy" not in registry.known
    finally:
        registry.close()
    master = bytes.fromhex(data.master.read_text().strip())
    assert bytes.fromhex(creds["key"]) == derive_device_key(master, "dev-policy", 1)


def test_a_change_that_cannot_be_recorded_is_not_made(tmp_path):
    data = DataDir(tmp_path).create()
    with Lifecycle(data) as life:
        life.enroll("dev-a", None)

        def fail(device, change):
            raise OSError("disk full")

        life.record = fail
        for act in (lambda: life.rekey("dev-a"), lambda: life.revoke("dev-a", "x"),
                    lambda: life.enroll("dev-b", None)):
            try:
                act()
            except OSError:
                pass
            else:
                raise AssertionError("the change went through without its record")
        current = life.registry.get("dev-a")
        assert current.keygen == 0 and current.revoked is None and life.registry.get("dev-b") is None


def test_bulk_enrolment_from_csv(tmp_path):
    (tmp_path / "p.toml").write_text(POLICY)
    csv = tmp_path / "devices.csv"
    csv.write_text("\ufeffid,group,url\n"           # a spreadsheet's BOM
                   "dev-b1,sensors,\n"
                   "dev-b2,sensors,https://issuer.example\n"
                   "bad id,sensors,\n"             # line 4
                   "dev-b1,sensors,\n"             # line 5: duplicate of line 2
                   "dev-b3\n"                      # line 6: too few fields
                   "\n"
                   "dev-b4,,\n")
    out = tmp_path / "out"
    d = str(tmp_path / "data")
    r = crumb_cli("device", "add", "--from", str(csv), "--out", str(out), "--data", d,
                  "--config", str(tmp_path / "p.toml"))
    assert r.returncode == 1, r.stderr
    assert f"{csv}:4: skipped" in r.stderr and f"{csv}:5: skipped" in r.stderr and "line 2" in r.stderr
    assert f"{csv}:6: skipped" in r.stderr
    assert "3 enrolled, 0 re-enrolled, 3 rows refused" in r.stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == ["dev-b1.json", "dev-b2.json", "dev-b4.json"]
    master = bytes.fromhex((tmp_path / "data" / "master.key").read_text().strip())
    for name in written:
        path = out / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        creds = json.loads(path.read_text())
        assert bytes.fromhex(creds["key"]) == derive_device_key(master, path.stem)
    assert json.loads((out / "dev-b2.json").read_text())["issuer"] == "https://issuer.example"
    assert json.loads((out / "dev-b1.json").read_text())["issuer"] == "http://127.0.0.1:1"  # the policy's
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert [(e["event"], e["device"]) for e in events(d)] == [("enrolled", "dev-b1"), ("enrolled", "dev-b2"),
                                                              ("enrolled", "dev-b4")]
    # Again: every row re-enrolled, nothing refused but the same bad rows.
    again = crumb_cli("device", "add", "--from", str(csv), "--out", str(out), "--data", d)
    assert "0 enrolled, 3 re-enrolled, 3 rows refused" in again.stdout


def test_bulk_enrolment_refuses_a_bad_file_and_needs_out(tmp_path):
    csv = tmp_path / "devices.csv"
    csv.write_text("name,group\ndev-1,sensors\n")
    r = crumb_cli("device", "add", "--from", str(csv), "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert r.returncode == 2 and ":1: the first line names the columns" in r.stderr
    r = crumb_cli("device", "add", "--from", str(csv), "--data", str(tmp_path))
    assert r.returncode == 2 and "--out" in r.stderr
    assert crumb_cli("device", "add", "dev-1", "--from", str(csv), "--out", "o", "--data", str(tmp_path)
                     ).returncode == 2


def test_secrets_are_0600_from_the_first_byte_even_over_a_0644_file(tmp_path):
    # Someone who could read the old 0644 file holds it open: the secret must never reach it.
    out = tmp_path / "crumb.json"
    out.write_text("old, world-readable\n")
    os.chmod(out, 0o644)
    with open(out) as spy:
        crumb_cli("device", "add", "dev-p", "--data", str(tmp_path / "d"), "--out", str(out), check=True)
        assert spy.read() == "old, world-readable\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and json.loads(out.read_text())["device_id"] == "dev-p"
    key = tmp_path / "issuer.jwk"
    key.write_text("{}")
    os.chmod(key, 0o644)
    with open(key) as spy:
        crumb_cli("keygen", str(key), "--force", check=True)
        assert spy.read() == "{}"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and "d" in json.loads(key.read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _ca_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crumb test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_ca_pin_goes_into_the_credentials(tmp_path):
    import ssl

    pem = _ca_pem()
    ca = tmp_path / "ca.pem"
    ca.write_text(pem)
    r = crumb_cli("device", "add", "dev-tls", "--data", str(tmp_path / "d"), "--url", "https://127.0.0.1:8443",
                  "--ca", str(ca), check=True)
    creds = json.loads(r.stdout)
    assert ssl.PEM_cert_to_DER_cert(creds["ca"]) == ssl.PEM_cert_to_DER_cert(pem)
    r = crumb_cli("device", "add", "dev-tls2", "--data", str(tmp_path / "d"), "--url", "https://127.0.0.1:8443",
                  check=True)
    assert "no --ca" in r.stderr and "ca" not in json.loads(r.stdout)
    (tmp_path / "bad.pem").write_text("not a certificate")
    r = crumb_cli("device", "add", "dev-tls3", "--data", str(tmp_path / "d"), "--ca", str(tmp_path / "bad.pem"))
    assert r.returncode == 2 and "no PEM certificate" in r.stderr
