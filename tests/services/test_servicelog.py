"""The services' log (crumb.services.servicelog): one hash-chained record per decision, fail closed.

Over real HTTP (the ASGI middleware under uvicorn, the WSGI one under werkzeug) and through the MQTT
consumer's processing: what a record holds, that `crumb audit verify --log`
reads the file as it reads the issuer's, that a changed record is caught,
and that a log which cannot be written refuses the request (store_unavailable)
instead of letting it through unrecorded.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest

from crumb import SigningKey, Verifier, attest, mint, to_text
from crumb.replay import MemoryReplayStore
from crumb.services import envelope
from crumb.services.mqtt import MqttConsumer
from crumb.services.servicelog import ServiceLog
from crumb.tooling.localservices import AppServer, WSGIAppServer

from . import apps

RES, OP = "/sensors/temp01", "publish"
URL = "/sensors/temp01/readings"


def bearer(token: bytes) -> dict:
    return {"authorization": f"Bearer {to_text(token)}"}


def bodies(path) -> list[dict]:
    conn = sqlite3.connect(path)
    try:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM audit ORDER BY seq")]
    finally:
        conn.close()


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", "audit", *args], capture_output=True, text=True,
                          check=False, timeout=60)


def break_writes(path) -> None:
    """Every later insert into the log fails, as a full or failing disk would make it."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER no_room BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    conn.commit()
    conn.close()


@pytest.fixture(params=["asgi", "wsgi"])
def served(request, tmp_path, issuer, nodes):
    log = ServiceLog(tmp_path / "ingest.db", service="ingest", node_key=nodes["ingest"].public)
    verifier = Verifier([issuer.public], node_keys=[k.public for k in nodes.values()], hop="ingest",
                        replay=MemoryReplayStore(fence=False))
    calls = apps.Calls()
    server = AppServer(apps.asgi_app(verifier, calls, service_log=log)) if request.param == "asgi" else \
        WSGIAppServer(apps.wsgi_app(verifier, calls, service_log=log))
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, calls, log
    log.close()


def declared(issuer: SigningKey, nodes: dict) -> bytes:
    return mint(issuer, sub="dev-0001", scope=[(RES, OP)],
                chain=[(n, nodes[n].public) for n in ("gateway", "ingest", "storage")])


def test_each_decision_is_one_chained_record(served, issuer, nodes):
    client, calls, log = served
    token = attest(declared(issuer, nodes), nodes["gateway"], "gateway")
    assert client.post(URL, headers=bearer(token)).status_code == 201
    assert client.post(URL, headers=bearer(token)).json()["code"] == "replayed"
    assert client.post(URL).json()["code"] == "missing_token"
    assert client.get("/healthz").status_code == 200  # public: no decision, no record
    assert calls.n == 2
    accepted, replayed, missing = bodies(log.path)
    from crumb.token import claims_of, split

    cti = claims_of(split(token)).cti.hex()
    assert accepted["event"] == "accepted" and accepted["service"] == "ingest"
    assert accepted["kid"] == nodes["ingest"].public.kid.hex()
    assert accepted["cti"] == cti and accepted["hops"] == ["gateway"]
    assert (accepted["resource"], accepted["operation"]) == (RES, OP)
    assert accepted["token"] == to_text(token) and isinstance(accepted["t"], int)
    assert (replayed["event"], replayed["code"], replayed["cti"], replayed["hops"]) == \
        ("refused", "replayed", cti, ["gateway"])
    assert (missing["event"], missing["code"], missing["cti"], missing["token"]) == \
        ("refused", "missing_token", None, None)
    r = audit_cli("verify", "--log", str(log.path))
    assert r.returncode == 0 and "ingest.db: ok: 3 records, chain intact" in r.stdout, r.stdout + r.stderr


def test_a_log_that_is_not_there_is_a_failure(tmp_path):
    r = audit_cli("verify", "--log", str(tmp_path / "gone.db"))
    assert r.returncode == 1 and "gone.db: UNREADABLE: no log at" in r.stdout, r.stdout + r.stderr


def test_a_changed_record_breaks_the_service_log(served, issuer, nodes):
    client, _, log = served
    token = attest(declared(issuer, nodes), nodes["gateway"], "gateway")
    assert client.post(URL, headers=bearer(token)).status_code == 201
    assert client.post(URL, headers=bearer(token)).status_code == 401
    conn = sqlite3.connect(log.path)
    conn.execute("DROP TRIGGER audit_no_update")  # who can write the file can do this: the chain still tells
    conn.execute("UPDATE audit SET body = replace(body, '\"refused\"', '\"accepted\"') WHERE seq = 2")
    conn.commit()
    conn.close()
    r = audit_cli("verify", "--log", str(log.path), "--json")
    assert r.returncode == 1, r.stdout
    (chain,) = json.loads(r.stdout)["chains"]
    assert chain["broken_at"] == 2 and "hash mismatch" in chain["reason"]


def test_a_service_log_that_cannot_be_written_refuses_the_request(served, issuer, nodes):
    client, calls, log = served
    break_writes(log.path)
    token = attest(declared(issuer, nodes), nodes["gateway"], "gateway")
    r = client.post(URL, headers=bearer(token))
    assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
    assert calls.n == 0  # the app never saw a request its log does not hold
    assert log.failures >= 1 and bodies(log.path) == []


def test_a_commit_the_disk_may_not_have_kept_refuses_the_request(served, issuer, nodes):
    """The issuer's check after each commit (auditchain.commit_doubt) guards the service log too."""
    client, calls, log = served
    log._probe.close()  # the probe cannot be written, as on a file system that stopped taking writes
    token = attest(declared(issuer, nodes), nodes["gateway"], "gateway")
    r = client.post(URL, headers=bearer(token))
    assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
    assert "stopped taking writes" in r.json()["detail"] and calls.n == 0


def test_the_mqtt_consumer_logs_and_fails_closed(tmp_path, issuer):
    log = ServiceLog(tmp_path / "mqtt.db", service="telemetry")
    handled: list[bytes] = []
    consumer = MqttConsumer(Verifier([issuer.public], replay=MemoryReplayStore(fence=False)),
                            lambda topic, payload, grant: handled.append(payload), "sensors/#",
                            service_log=log)
    topic = "sensors/temp01"
    token = mint(issuer, sub="dev-0001", scope=[(topic, "publish")], uses=3)
    assert consumer.process(topic, envelope.pack(token, b"21.5")) is not None
    assert consumer.process(topic, envelope.pack(mint(SigningKey.generate(), sub="x", scope=[(topic, "publish")]),
                                                 b"1")) is None
    assert [(b["event"], b.get("code")) for b in bodies(log.path)] == [("accepted", None), ("refused", "unknown_key")]
    break_writes(log.path)
    assert consumer.process(topic, envelope.pack(token, b"22.0")) is None  # valid, but it cannot be recorded
    assert handled == [b"21.5"] and consumer.rejected["store_unavailable"] == 1
    log.close()
