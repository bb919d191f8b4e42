"""The audit trail across services: `crumb audit trace` on the 3-hop example, storage in PostgreSQL.

A real issuer (`crumb issuer serve`) issues the device's token for the chain
gateway → ingest → storage; the example's three processes run with their
service logs (gateway.db and ingest.db, CRUMB_SERVICE_LOG) and the database,
installed with `--log database`, records in crumb.log in the transaction that
stores the row. Then trace finds four records (issuer, gateway, ingest,
database), verifies every chain and checks every attestation offline; and it
fails, naming why, for a missing hop, a changed log, a forged attestation.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from crumb import SigningKey, attest, to_text
from crumb.keys import b64u, save
from crumb.replay import DEFAULT_LEEWAY
from crumb.services.pg.install import install
from crumb.services.pg.keys import add
from crumb.services.servicelog import EVENT_ACCEPTED, ServiceLog
from crumb.token import claims_of, split
from crumb.tooling.issuerclient import Credentials, IssuerClient
from crumb.tooling.localissuer import LocalIssuer
from crumb.tooling.localservices import UvicornProcess, reserve_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chain"
RES, OP = "/sensors/temp01", "publish"
HOPS = ("gateway", "ingest", "storage")

POLICY = """\
[issuer]
name = "trail"
url = "{url}"
hop_refs = "kid"

[defaults]
ttl = 300
uses = 1
batch = 4

[nodes]
{nodes}

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["publish"]
chain = ["gateway", "ingest", "storage"]
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, text=True, check=False,
                          timeout=120)


@pytest.fixture(scope="module")
def trail(pg, tmp_path_factory):
    base = tmp_path_factory.mktemp("trail")
    nodes = {name: SigningKey.generate() for name in HOPS}
    for name, key in nodes.items():
        save(key, base / f"{name}.key")
    data = base / "issuer-data"
    policy = base / "policy.toml"
    with reserve_port() as held:
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        policy.write_text(POLICY.format(url=url, nodes="\n".join(
            f'{n} = "{b64u(k.public.raw)}"' for n, k in nodes.items())))
        issuer = LocalIssuer(data, policy, port=held.getsockname()[1]).start()
    procs: dict[str, UvicornProcess] = {}
    try:
        jwk = httpx.get(f"{url}/keys", timeout=10).json()["keys"][0]
        (base / "issuer.pub").write_text(json.dumps(jwk))
        r = cli("device", "add", "dev-0001", "--group", "sensors", "--data", str(data), "--config", str(policy),
                "--out", str(base / "dev-0001.json"))
        assert r.returncode == 0, r.stderr
        pg.psql("CREATE DATABASE trail")
        dsn = pg.dsn(dbname="trail")
        install(dsn, hop="storage", path=pg.python_path(), log="database")
        from crumb.keys import load_public_key

        add(dsn, [load_public_key(base / "issuer.pub")], [(n, k.public) for n, k in nodes.items()])
        pg.psql((EXAMPLE / "storage.sql").read_text(), dbname="trail")
        common = {"CRUMB_ISSUER_PUB": str(base / "issuer.pub"),
                  "CRUMB_NODE_PUBS": ",".join(str(base / f"{n}.key.pub") for n in HOPS)}
        procs["storage"] = UvicornProcess("storage:app", app_dir=EXAMPLE, name="storage",
                                          env={**common, "CRUMB_PG_DSN": pg.dsn("crumb_storage", "trail")})
        procs["ingest"] = UvicornProcess("ingest:app", app_dir=EXAMPLE, name="ingest",
                                         env={**common, "CRUMB_NODE_KEY": str(base / "ingest.key"),
                                              "CRUMB_NEXT": procs["storage"].url,
                                              "CRUMB_SERVICE_LOG": str(base / "ingest.db")})
        procs["gateway"] = UvicornProcess("gateway:app", app_dir=EXAMPLE, name="gateway",
                                          env={**common, "CRUMB_NODE_KEY": str(base / "gateway.key"),
                                               "CRUMB_NEXT": procs["ingest"].url,
                                               "CRUMB_SERVICE_LOG": str(base / "gateway.db")})
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.start(), procs.values()))
        # The hops' fresh in-memory replay stores refuse tokens issued up to their leeway after they
        # started (the restart fence): the device asks for its token after that.
        time.sleep(max(0.0, int(time.time()) + DEFAULT_LEEWAY + 1.01 - time.time()))
        client = IssuerClient(Credentials.load(base / "dev-0001.json"), timeout=10)
        try:
            token = client.request([(RES, OP)]).tokens[0][0]
        finally:
            client.close()
        r = httpx.post(procs["gateway"].url + "/sensors/temp01/readings", json={"value": 21.5},
                       headers={"authorization": "Bearer " + to_text(token)}, timeout=30)
        assert r.status_code == 201, r.text
        assert r.json()["database"] == "postgresql" and r.json()["attested_by"] == ["gateway", "ingest"]
        yield {"base": base, "data": data, "dsn": dsn, "token": token, "nodes": nodes, "pg": pg,
               "gateway": procs["gateway"].url,
               "cti": claims_of(split(token)).cti.hex()}
    finally:
        for p in procs.values():
            p.close()
        issuer.close()


def keys(t: dict) -> list[str]:
    out = ["--key", str(t["base"] / "issuer.pub")]
    for n in HOPS:
        out += ["--node-key", str(t["base"] / f"{n}.key.pub")]
    return out


def logs(t: dict, *names: str) -> list[str]:
    out = ["--log", str(t["data"])]
    for n in names:
        out += ["--log", t["dsn"] if n == "database" else str(t["base"] / f"{n}.db")]
    return out


def trace(t: dict, *args: str) -> tuple[int, dict, str]:
    r = cli("audit", "trace", t["cti"], *args, *keys(t), "--json")
    text = cli("audit", "trace", t["cti"], *args, *keys(t))
    return r.returncode, json.loads(r.stdout), text.stdout + text.stderr


def test_trace_shows_the_four_records_and_verifies_each_chain(trail):
    code, result, text = trace(trail, *logs(trail, "gateway", "ingest", "database"))
    print(text)  # the bar's output, shown with -s
    assert code == 0 and result["ok"], text
    steps = result["steps"]
    assert [s["who"] for s in steps] == ["issuer", "gateway", "ingest", "database"], text
    assert [s["decision"] for s in steps] == ["issued", "accepted", "accepted", "accepted"]
    assert [s["hops"] for s in steps[1:]] == [[], ["gateway"], ["gateway", "ingest"]]
    assert all(s["check"].startswith("ok") for s in steps[1:]), text
    assert steps[1]["attestation"] == steps[2]["attestation"] == "verified in the next hop's record"
    assert steps[3]["log"] == "crumb.log@trail" and steps[0]["log"] == "audit.db"
    # The issuer's data directory holds a chain per writer (the command line's, the server's): all verified.
    assert {log["log"] for log in result["logs"]} >= {"audit.db", "gateway.db", "ingest.db", "crumb.log@trail"}
    assert all(log["ok"] for log in result["logs"])
    assert "attestation" not in steps[3]  # the last hop: nothing after it to prove or miss
    assert result["chain"] == list(HOPS) and result["sub"] == "dev-0001" and not result["missing"]
    assert "result: ok" in text and "4. database" in text
    # Every one of these logs verifies on its own too, the database's with --dsn.
    r = cli("audit", "verify", "--log", str(trail["base"] / "gateway.db"), "--log", str(trail["base"] / "ingest.db"),
            "--dsn", trail["dsn"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c["file"] for c in json.loads(r.stdout)["chains"]] == ["gateway.db", "ingest.db", "crumb.log@trail"]
    assert cli("audit", "verify", "--data", str(trail["data"])).returncode == 0


def test_trace_names_the_hop_that_did_not_record_it(trail):
    code, result, text = trace(trail, *logs(trail, "gateway", "database"))  # ingest's log not given
    assert code == 1 and not result["ok"]
    assert [s["who"] for s in result["steps"]] == ["issuer", "gateway", "database"]
    (missing,) = result["missing"]
    assert missing.startswith("hop 2 (ingest)") and "a later hop's record shows it attested" in missing
    assert "MISSING hop 2 (ingest)" in text
    code, result, _ = trace(trail, *logs(trail, "gateway", "ingest", "database")[2:])  # no issuer data
    assert code == 1 and result["missing"][0].startswith("issuer:")


def test_a_refusal_is_part_of_the_trail(trail):
    """The same token sent again: the gateway refuses it (replayed) and says so in its log; the trail still holds."""
    r = httpx.post(trail["gateway"] + "/sensors/temp01/readings", json={"value": 1}, timeout=30,
                   headers={"authorization": "Bearer " + to_text(trail["token"])})
    assert r.status_code == 401 and r.json()["code"] == "replayed"
    code, result, text = trace(trail, *logs(trail, "gateway", "ingest", "database"))
    assert code == 0, text
    assert [(s["who"], s["decision"], s.get("code")) for s in result["steps"]] == [
        ("issuer", "issued", None), ("gateway", "accepted", None), ("gateway", "refused", "replayed"),
        ("ingest", "accepted", None), ("database", "accepted", None)], text
    assert "gateway    REFUSED" in text


def test_a_record_under_another_hops_key_fails_the_trace(trail, tmp_path):
    """A log claiming to be the gateway's, written under another node key than the token declares for it."""
    token = trail["token"]
    log = ServiceLog(tmp_path / "gateway.db", service="gateway", node_key=trail["nodes"]["ingest"].public)
    log.log(token=token, decision=EVENT_ACCEPTED, code=None, resource=RES, operation=OP, hops=[])
    log.close()
    code, result, text = trace(trail, "--log", str(trail["data"]), "--log", str(tmp_path / "gateway.db"),
                               "--log", str(trail["base"] / "ingest.db"), "--log", trail["dsn"])
    assert code == 1 and any("but the token declares" in p for p in result["problems"]), text


def test_a_forged_attestation_fails_the_trace(trail):
    """A log whose chain holds, but whose token claims a gateway attestation the gateway never made."""
    forged_db = trail["base"] / "forged.db"
    tok = split(attest(trail["token"], trail["nodes"]["gateway"], "gateway"))
    # The gateway's block re-signed by another key: what a hop that skipped the gateway would have to make.
    block = tok.blocks[-1]
    block.signature = SigningKey.generate().sign(b"not the gateway's")
    forged = tok.to_bytes()
    log = ServiceLog(forged_db, service="ingest", node_key=trail["nodes"]["ingest"].public)
    log.log(token=forged, decision=EVENT_ACCEPTED, code=None, resource=RES, operation=OP, hops=["gateway"])
    log.close()
    assert cli("audit", "verify", "--log", str(forged_db)).returncode == 0  # its chain is fine
    code, result, text = trace(trail, "--log", str(trail["data"]), "--log", str(trail["base"] / "gateway.db"),
                               "--log", str(forged_db), "--log", trail["dsn"])
    assert code == 1, text
    bad = [s for s in result["steps"] if s["log"] == "forged.db"]
    assert bad and bad[0]["check"].startswith("FAILED: chain_invalid"), text
    assert any("forged.db" in p and "does not verify" in p for p in result["problems"])


def test_a_changed_service_log_fails_verify_and_trace(trail, tmp_path):
    copy = tmp_path / "gateway.db"
    with sqlite3.connect(trail["base"] / "gateway.db") as live, sqlite3.connect(copy) as out:
        live.backup(out)  # the running gateway's log, WAL included
    conn = sqlite3.connect(copy)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET body = replace(body, '\"accepted\"', '\"refused\"') WHERE seq = 1")
    conn.commit()
    conn.close()
    r = cli("audit", "verify", "--log", str(copy))
    assert r.returncode == 1 and "gateway.db: BROKEN at record 1" in r.stdout, r.stdout
    code, result, text = trace(trail, "--log", str(trail["data"]), "--log", str(copy),
                               "--log", str(trail["base"] / "ingest.db"), "--log", trail["dsn"])
    assert code == 1 and "gateway.db: chain broken at record 1" in " ".join(result["problems"]), text


def test_a_changed_database_log_fails_verify(trail):
    pg, dsn = trail["pg"], trail["dsn"]
    with psycopg.connect(dsn) as conn:
        (original,) = conn.execute("SELECT body FROM crumb.log WHERE seq = 1").fetchone()
    pg.psql("ALTER TABLE crumb.log DISABLE TRIGGER log_append_only;"
            "UPDATE crumb.log SET body = convert_to(replace(convert_from(body, 'UTF8'), 'publish', 'delete'), 'UTF8') "
            "WHERE seq = 1", dbname="trail")
    try:
        r = cli("audit", "verify", "--dsn", dsn)
        assert r.returncode == 1 and "crumb.log@trail: BROKEN at record 1" in r.stdout, r.stdout + r.stderr
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE crumb.log SET body = %s WHERE seq = 1", (original,))
            conn.execute("ALTER TABLE crumb.log ENABLE TRIGGER log_append_only")
    assert cli("audit", "verify", "--dsn", dsn).returncode == 0
    with pytest.raises(psycopg.Error, match="append-only"), psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM crumb.log")


def fresh_arrived(trail) -> bytes:
    """A new token from the issuer, attested by the gateway and ingest, as it reaches the database."""
    client = IssuerClient(Credentials.load(trail["base"] / "dev-0001.json"), timeout=10)
    try:
        token = client.request([(RES, OP)]).tokens[0][0]
    finally:
        client.close()
    nodes = trail["nodes"]
    return attest(attest(token, nodes["gateway"], "gateway"), nodes["ingest"], "ingest")


def test_a_rolled_back_transaction_leaves_no_record(trail):
    pg, arrived = trail["pg"], fresh_arrived(trail)
    records = int(pg.psql("SELECT count(*) FROM crumb.log", dbname="trail"))
    with psycopg.connect(pg.dsn("crumb_storage", "trail")) as conn:
        conn.execute("SELECT set_config('crumb.token', %s, true)", (to_text(arrived),))
        conn.execute("INSERT INTO readings (sensor, value, device) VALUES ('temp01', 1, 'dev-0001')")
        conn.rollback()  # the row, the use and the record go together
        assert int(pg.psql("SELECT count(*) FROM crumb.log", dbname="trail")) == records
        conn.execute("SELECT set_config('crumb.token', %s, true)", (to_text(arrived),))
        conn.execute("INSERT INTO readings (sensor, value, device) VALUES ('temp01', 2, 'dev-0001')")
        conn.commit()
    assert int(pg.psql("SELECT count(*) FROM crumb.log", dbname="trail")) == records + 1
    assert cli("audit", "verify", "--dsn", trail["dsn"]).returncode == 0


def test_crumb_verify_records_each_call_and_refusals_leave_none(trail):
    pg, dsn, arrived = trail["pg"], trail["dsn"], fresh_arrived(trail)
    records = int(pg.psql("SELECT count(*) FROM crumb.log", dbname="trail"))
    with psycopg.connect(dsn) as conn:
        claims = conn.execute("SELECT crumb.verify(%s, %s, %s)", (to_text(arrived), RES, OP)).fetchone()[0]
        conn.commit()
        with pytest.raises(psycopg.Error) as again:  # the same single-use token: refused, and not recorded
            conn.execute("SELECT crumb.verify(%s, %s, %s)", (to_text(arrived), RES, OP))
        assert again.value.diag.message_detail == "replayed"
        conn.rollback()
    with psycopg.connect(dsn) as conn:
        (body,) = conn.execute("SELECT convert_from(body, 'UTF8') FROM crumb.log ORDER BY seq DESC LIMIT 1").fetchone()
    record = json.loads(body)
    assert int(pg.psql("SELECT count(*) FROM crumb.log", dbname="trail")) == records + 1
    assert (record["service"], record["event"], record["cti"], record["hops"]) == \
        ("database", "accepted", claims_of(split(arrived)).cti.hex(), ["gateway", "ingest"])
    assert claims["attested_by"] == ["gateway", "ingest"]
    assert record["token"] == to_text(arrived)


def test_the_database_refuses_what_it_cannot_record(trail):
    """Fail closed: a token the database would accept is refused when crumb.log cannot take its record."""
    pg, dsn, arrived = trail["pg"], trail["dsn"], fresh_arrived(trail)
    pg.psql("CREATE FUNCTION public.no_room() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$;"
            "CREATE TRIGGER no_room BEFORE INSERT ON crumb.log FOR EACH ROW EXECUTE FUNCTION public.no_room()",
            dbname="trail")
    before = pg.psql("SELECT count(*) FROM readings", dbname="trail")
    try:
        with pytest.raises(psycopg.Error) as refused, psycopg.connect(pg.dsn("crumb_storage", "trail")) as conn:
            conn.execute("SELECT set_config('crumb.token', %s, true)", (to_text(arrived),))
            conn.execute("INSERT INTO readings (sensor, value, device) VALUES ('temp01', 1, 'dev-0001')")
        assert refused.value.diag.message_detail == "store_unavailable", refused.value
    finally:
        pg.psql("DROP TRIGGER no_room ON crumb.log; DROP FUNCTION public.no_room()", dbname="trail")
    assert pg.psql("SELECT count(*) FROM readings", dbname="trail") == before
    with psycopg.connect(pg.dsn("crumb_storage", "trail")) as conn:  # the use was not spent: it goes in now
        conn.execute("SELECT set_config('crumb.token', %s, true)", (to_text(arrived),))
        conn.execute("INSERT INTO readings (sensor, value, device) VALUES ('temp01', 1, 'dev-0001')")
    assert cli("audit", "verify", "--dsn", dsn).returncode == 0
