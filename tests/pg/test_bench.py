"""`crumb bench pg`: runs, reports its fields, and every crumb transaction commits once. Timings are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_pg_reports_plain_and_crumb_from_one_run():
    """With the service log on, so that its records are counted too."""
    run = subprocess.run([sys.executable, "-m", "crumb.cli", "bench", "pg", "--json", "--transactions", "50",
                          "--rounds", "2", "--log"], capture_output=True, check=False, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    r = json.loads(run.stdout)
    print({k: r[k] for k in ("rows_per_s_plain", "rows_per_s_crumb", "overhead_ms_per_tx", "in_process_verify_ms")})
    assert r["ok"] and r["refused"] == {}
    assert r["tokens_spent"] == r["crumb_rows"] == 200 + 2 * 50  # warm-up + rounds: one use per transaction
    assert r["service_log"] and r["log_records"] == 200 + 2 * 50 + 2 * 50  # and the in-server rounds' tokens
    assert set(r["server_ms_per_tx"]) == {"plain", "crumb", "plain_cold", "crumb_cold"}
    for key in ("rows_per_s_plain", "rows_per_s_crumb"):
        assert isinstance(r[key], int) and r[key] > 0
    for key in ("overhead_ms_per_tx", "set_token_ms_per_tx", "verify_ms_per_tx", "in_process_verify_ms",
                "server_overhead_ms_per_tx", "server_cold_overhead_ms_per_tx"):
        assert isinstance(r[key], float)
    assert all(len(v) == 2 for v in r["round_seconds"].values())
