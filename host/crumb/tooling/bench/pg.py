"""`crumb bench pg`: what crumb's row-level security costs a PostgreSQL transaction.

Starts a private PostgreSQL (crumb.tooling.pgserver), installs crumb, and
inserts rows as an application role, one transaction after another on one
connection, three ways, in the same run, interleaved round by round:

- plain: ``INSERT`` into a table without a policy;
- plain + SET: ``SELECT set_config('crumb.token', ..., true)`` then the same
  ``INSERT``: what sending the token costs by itself (one more statement);
- crumb: the same two statements into a table whose policy is
  ``WITH CHECK (crumb.allows('/sensors/' || sensor, 'publish'))``, a fresh
  single-use token each transaction: verified by crumb's Verifier inside the
  server, its use recorded in crumb.spent, committed with the row.

Each round times every variant over the same number of transactions, and
every transaction in it. ``rows_per_s_*`` come from each round's total time
(throughput); ``ms_per_tx`` and ``overhead_ms_per_tx`` from each round's
median transaction, which a busy machine's scheduling stalls (a backend or
this process waiting milliseconds for a core) move far less than a mean
(``mean_ms_per_tx`` has the means). Both are medians over rounds.
``overhead_ms_per_tx`` is crumb minus plain per transaction; it splits into ``set_token_ms_per_tx`` (plain + SET minus
plain: the extra statement) and ``verify_ms_per_tx`` (crumb minus plain + SET:
the work inside the server). Every crumb transaction must commit, and
crumb.spent must then hold one use per token: otherwise ``ok`` is false.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext
from typing import Any

import click

from ...extras import require

RESOURCE_PREFIX, OPERATION = "/sensors/", "publish"
TABLES = """
CREATE TABLE plain_readings (id bigserial PRIMARY KEY, sensor text NOT NULL, value double precision NOT NULL);
CREATE TABLE crumb_readings (id bigserial PRIMARY KEY, sensor text NOT NULL, value double precision NOT NULL);
ALTER TABLE crumb_readings ENABLE ROW LEVEL SECURITY;
CREATE POLICY publish ON crumb_readings FOR INSERT
    WITH CHECK (crumb.allows('/sensors/' || sensor, 'publish'));
GRANT INSERT ON plain_readings, crumb_readings TO bench;
GRANT USAGE ON SEQUENCE plain_readings_id_seq, crumb_readings_id_seq TO bench;
CREATE TABLE bench_tokens (i integer PRIMARY KEY, t text NOT NULL);
GRANT SELECT ON bench_tokens TO bench;
-- For scale: exactly `us` microseconds of Python in the backend, and nothing else.
CREATE FUNCTION bench_busy(us integer) RETURNS boolean LANGUAGE plpython3u AS $$
import time
end = time.perf_counter() + us / 1e6
while time.perf_counter() < end:
    pass
return True
$$;
"""
BUSY_US = 200

# The same transactions run from inside the server (a procedure that commits after each):
# no client round trips and no client process to wait for, so what remains is the work
# the database does. Called by the role bench, so the policy applies. Each transaction is
# timed; the procedure returns the median in microseconds. cold: before each transaction
# (outside its timing) the backend writes to COLD_BYTES of memory, as other work on the
# core (a client on the same machine, other sessions) would between two transactions; its
# caches then start cold, and a transaction whose code and data they held pays to reload them.
SERVER_SIDE = """
CREATE PROCEDURE bench_server(variant text, first integer, n integer, rows_per_tx integer, cold boolean,
                              INOUT median_us double precision DEFAULT NULL)
LANGUAGE plpython3u AS $$
import statistics, time
if variant == "crumb":
    pick = plpy.prepare("SELECT t FROM bench_tokens WHERE i >= $1 ORDER BY i LIMIT $2", ["int4", "int4"])
    tokens = [r["t"] for r in plpy.execute(pick, [first, n])]
else:
    tokens = [None] * n
set_token = plpy.prepare("SELECT set_config('crumb.token', $1, true)", ["text"])
insert = plpy.prepare("INSERT INTO %s_readings (sensor, value) VALUES ('temp01', $1)" % variant, ["float8"])
each = []
clock = time.perf_counter
other = bytearray(COLD_BYTES if cold else 0)
touch = bytes(len(range(0, len(other), 64)))  # a byte for every 64 (a cache line each)
for token in tokens:
    other[::64] = touch
    t0 = clock()
    if token is not None:
        plpy.execute(set_token, [token])
    for i in range(rows_per_tx):
        plpy.execute(insert, [float(i)])
    plpy.commit()
    each.append(clock() - t0)
return {"median_us": statistics.median(each) * 1e6}
$$;
"""
COLD_BYTES = 8 << 20  # more than a core's L2 cache on most servers (2 MiB here)


def _timed(conn: Any, table: str, tokens: list[str], rows_per_tx: int, setting: str,
           pipeline: bool = False) -> tuple[float, float]:
    """(seconds for len(tokens) transactions of ``rows_per_tx`` inserts each, median seconds of one).

    ``setting``: the GUC to send each token in first ("": none; "busy": instead, BUSY_US of
    Python in the backend)."""
    import psycopg

    insert = f"INSERT INTO {table} (sensor, value) VALUES (%s, %s)"
    each = []
    clock = time.perf_counter
    t0 = clock()
    for token in tokens:
        t = clock()
        # By default one round trip per statement, except that the token travels with the first
        # insert. --pipeline: psycopg's pipeline mode, BEGIN, the token, the inserts and COMMIT in
        # one flush (but here the plain transactions slow down too).
        with conn.pipeline() if pipeline else nullcontext(), conn.transaction():
            if setting == "busy":
                conn.execute("SELECT bench_busy(%s)", (BUSY_US,))
            first = 0
            if setting and setting != "busy" and not pipeline:
                # The token and the first insert in one query string, one round trip: a
                # client-side binding cursor may send several statements at once.
                with psycopg.ClientCursor(conn) as cur:
                    cur.execute("SELECT set_config(%s, %s, true); " + insert, (setting, token, "temp01", 0.0))
                first = 1
            elif setting and setting != "busy":
                conn.execute("SELECT set_config(%s, %s, true)", (setting, token))
            for i in range(first, rows_per_tx):
                conn.execute(insert, ("temp01", float(i)))
        each.append(clock() - t)
    return clock() - t0, statistics.median(each)


def _verify_in_process(verifier: Any, tokens: list[str], resource: str) -> float:
    t0 = time.perf_counter()
    for token in tokens:
        verifier.verify(token, resource, OPERATION)
    return time.perf_counter() - t0


def run(transactions: int = 1000, rounds: int = 5, rows_per_tx: int = 1, warmup: int = 200,
        pipeline: bool = False, log: bool = False) -> dict[str, Any]:
    import psycopg

    from ...keys import SigningKey
    from ...replay import MemoryReplayStore
    from ...services.pg.install import install
    from ...services.pg.keys import add
    from ...token import mint, to_text
    from ...verify import Verifier
    from ..pgserver import SETTINGS, PostgresServer

    issuer = SigningKey.generate()
    res = RESOURCE_PREFIX + "temp01"
    tokens = [to_text(mint(issuer, sub="dev-0001", scope=[(res, OPERATION)], ttl=3600))
              for _ in range(warmup + transactions * rounds)]
    server_tokens = [to_text(mint(issuer, sub="dev-0001", scope=[(res, OPERATION)], ttl=3600))
                     for _ in range(transactions * rounds)]
    local = [to_text(mint(issuer, sub="dev-0001", scope=[(res, OPERATION)], ttl=3600)) for _ in range(transactions)]
    dummy = ["x" * len(tokens[0])] * transactions  # the same bytes on the wire, for plain + SET
    with PostgresServer() as pg:
        install(pg.dsn(), path=pg.python_path(), log="bench-db" if log else None)
        add(pg.dsn(), [issuer.public])
        pg.create_role("bench")
        pg.psql(TABLES)
        pg.psql(SERVER_SIDE.replace("COLD_BYTES", str(COLD_BYTES)))
        with psycopg.connect(pg.dsn()) as setup, setup.cursor() as cur:
            cur.executemany("INSERT INTO bench_tokens (i, t) VALUES (%s, %s)", list(enumerate(server_tokens)))
        version = pg.psql("SHOW server_version").strip()
        times: dict[str, list[float]] = {"plain": [], "plain_set": [], "crumb": [], "plain_busy": [], "in_process": []}
        typical: dict[str, list[float]] = {"plain": [], "plain_set": [], "crumb": [], "plain_busy": []}
        refused: dict[str, int] = {}
        with psycopg.connect(pg.dsn("bench")) as conn:
            # Warm-up: the first crumb call in a session imports crumb into the backend (~0.1 s).
            _timed(conn, "crumb_readings", tokens[:warmup], rows_per_tx, "crumb.token", pipeline)
            _timed(conn, "plain_readings", dummy[:warmup], rows_per_tx, "", pipeline)
            used = warmup
            for r in range(rounds):
                share = tokens[used:used + transactions]
                used += transactions
                variants = [("plain", "plain_readings", dummy, ""),
                            ("plain_set", "plain_readings", dummy, "crumb.bench"),
                            ("crumb", "crumb_readings", share, "crumb.token"),
                            ("plain_busy", "plain_readings", dummy, "busy")]
                for name, table, toks, setting in variants[r % 4:] + variants[:r % 4]:  # rotate the order
                    try:
                        total, median = _timed(conn, table, toks, rows_per_tx, setting, pipeline)
                        times[name].append(total)
                        typical[name].append(median)
                    except psycopg.Error as e:
                        refused[e.diag.message_detail or e.sqlstate or "error"] = \
                            refused.get(e.diag.message_detail or e.sqlstate or "error", 0) + 1
                        conn.rollback()
                times["in_process"].append(_verify_in_process(
                    Verifier([issuer.public], replay=MemoryReplayStore(fence=False)), local, res))
        server: dict[str, list[float]] = {"plain": [], "crumb": [], "plain_cold": [], "crumb_cold": []}
        with psycopg.connect(pg.dsn("bench"), autocommit=True) as conn:  # CALL may commit only outside a block
            for r in range(rounds):
                half = transactions // 2  # each token once: half of the round's share warm, half cold
                pairs = [("plain", False), ("crumb", False), ("plain", True), ("crumb", True)]
                for name, cold in pairs[r % 4:] + pairs[:r % 4]:
                    try:
                        row = conn.execute("CALL bench_server(%s, %s, %s, %s, %s)",
                                           (name, r * transactions + (half if cold else 0), half, rows_per_tx,
                                            cold)).fetchone()
                        assert row is not None
                        server[name + ("_cold" if cold else "")].append(row[0] / 1000)
                    except psycopg.Error as e:
                        key = f"server:{e.diag.message_detail or e.sqlstate or 'error'}"
                        refused[key] = refused.get(key, 0) + 1
        server_used = rounds * 2 * (transactions // 2)  # tokens the in-server rounds spent
        spent = int(pg.psql("SELECT count(*) FROM crumb.spent WHERE used = 1")) - server_used
        rows = int(pg.psql("SELECT count(*) FROM crumb_readings")) - server_used * rows_per_tx
        records = int(pg.psql("SELECT count(*) FROM crumb.log"))

    def per_tx_ms(name: str) -> float:  # from the round's total: throughput
        return statistics.median(times[name]) / transactions * 1000 if times[name] else float("nan")

    def typical_ms(name: str) -> float:  # the median transaction of each round, median over rounds
        return statistics.median(typical[name]) * 1000 if typical[name] else float("nan")

    plain, plain_set, crumb = typical_ms("plain"), typical_ms("plain_set"), typical_ms("crumb")
    return {
        "rows_per_s_plain": round(rows_per_tx * 1000 / per_tx_ms("plain")),
        "rows_per_s_crumb": round(rows_per_tx * 1000 / per_tx_ms("crumb")),
        "overhead_ms_per_tx": round(crumb - plain, 4),
        "set_token_ms_per_tx": round(plain_set - plain, 4),
        "verify_ms_per_tx": round(crumb - plain_set, 4),
        "in_process_verify_ms": round(per_tx_ms("in_process"), 4),
        # For scale: what BUSY_US of plain Python in the backend adds to a transaction, seen from here.
        "busy_us": BUSY_US,
        "busy_overhead_ms_per_tx": round(typical_ms("plain_busy") - plain, 4),
        # The overhead in units of one in-process verification: how the two compare on this machine now.
        "overhead_in_verifications": round((crumb - plain) / per_tx_ms("in_process"), 2),
        "ms_per_tx": {"plain": round(plain, 4), "plain_set": round(plain_set, 4), "crumb": round(crumb, 4),
                      "plain_busy": round(typical_ms("plain_busy"), 4)},
        # The same transactions from inside the server: the database's own work per transaction.
        "server_ms_per_tx": {k: round(statistics.median(v), 4) if v else None for k, v in server.items()},
        "server_overhead_ms_per_tx": _difference(server, "crumb", "plain"),
        # The same with the core's caches cold at the start of each transaction (see SERVER_SIDE).
        "server_cold_overhead_ms_per_tx": _difference(server, "crumb_cold", "plain_cold"),
        "mean_ms_per_tx": {k: round(per_tx_ms(k), 4) for k in ("plain", "plain_set", "crumb", "plain_busy")},
        "rounds": rounds,
        "transactions_per_round": transactions,
        "rows_per_tx": rows_per_tx,
        "pipeline": pipeline,
        # --log: every accepted token also appended to crumb.log, the database's service log.
        "service_log": log,
        "log_records": records,
        "round_seconds": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
        "refused": refused,
        "tokens_spent": spent,
        "crumb_rows": rows,
        "ok": (not refused and spent == warmup + transactions * rounds and rows == spent * rows_per_tx
               and records == (spent + server_used if log else 0)),
        "server": {"postgres": version, "connection": "unix socket, one connection, one transaction at a time",
                   **{k: SETTINGS[k] for k in ("fsync", "synchronous_commit", "full_page_writes")}},
    }


def _difference(server: dict[str, list[float]], a: str, b: str) -> float | None:
    return round(statistics.median(server[a]) - statistics.median(server[b]), 4) if server[a] and server[b] else None


def render(r: dict[str, Any]) -> str:
    ms = r["ms_per_tx"]
    return "\n".join([
        (f"PostgreSQL {r['server']['postgres']}, {r['rounds']} rounds x {r['transactions_per_round']:,} transactions "
        f"of {r['rows_per_tx']} row(s), {'pipeline mode' if r['pipeline'] else 'a round trip per statement'}, "
        f"{'with' if r['service_log'] else 'without'} the service log, medians over rounds"),
        f"  plain          {ms['plain']:.3f} ms/tx   {r['rows_per_s_plain']:>8,} rows/s",
        f"  plain + SET    {ms['plain_set']:.3f} ms/tx",
        f"  crumb policy   {ms['crumb']:.3f} ms/tx   {r['rows_per_s_crumb']:>8,} rows/s",
        (f"  overhead       {r['overhead_ms_per_tx']:.3f} ms/tx = SET LOCAL crumb.token {r['set_token_ms_per_tx']:.3f}"
        f" + verification in the server {r['verify_ms_per_tx']:.3f}"),
        (f"  in the server  {r['server_ms_per_tx']['plain']:.3f} ms/tx plain, {r['server_ms_per_tx']['crumb']:.3f} "
         f"ms/tx crumb: overhead {r['server_overhead_ms_per_tx']:.3f} ms/tx without the client's round trips"),
        (f"  cold caches    {r['server_ms_per_tx']['plain_cold']:.3f} ms/tx plain, "
         f"{r['server_ms_per_tx']['crumb_cold']:.3f} ms/tx crumb: overhead {r['server_cold_overhead_ms_per_tx']:.3f} "
         "ms/tx in the server when other work used the core between transactions"),
        (f"  for scale      {r['busy_us']} us of plain Python in the backend adds "
         f"{r['busy_overhead_ms_per_tx']:.3f} ms/tx seen from here"),
        (f"  for scale      crumb's Verifier.verify in this process: {r['in_process_verify_ms']:.3f} ms "
         f"(the overhead is {r['overhead_in_verifications']} of them)"),
        (f"  result         {'OK: every token spent once, every row committed' if r['ok'] else 'FAILED'}"
        f"{'' if not r['refused'] else ' refused: ' + json.dumps(r['refused'])}"),
    ])


@click.command("pg")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--transactions", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Transactions per variant and round.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1), help="Rounds (medians over them).")
@click.option("--rows-per-tx", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rows inserted by each transaction (one token covers them all).")
@click.option("--pipeline/--no-pipeline", default=False, show_default=True,
              help="Send each transaction in psycopg's pipeline mode (one flush), or statement by statement.")
@click.option("--log/--no-log", default=False, show_default=True,
              help="Record every accepted token in crumb.log (crumb pg install --log), and count its cost too.")
def command(as_json: bool, transactions: int, rounds: int, rows_per_tx: int, pipeline: bool, log: bool) -> None:
    """Rows inserted with and without crumb's row-level security policy, in one private PostgreSQL."""
    require("pg", "crumb bench pg")
    result = run(transactions=transactions, rounds=rounds, rows_per_tx=rows_per_tx, pipeline=pipeline, log=log)
    click.echo(json.dumps(result, indent=1) if as_json else render(result))
