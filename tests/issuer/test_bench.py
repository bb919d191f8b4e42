"""`crumb bench issuer` runs end to end and reports what the issue asks for."""

from __future__ import annotations

import json

from .conftest import crumb_cli


def test_bench_issuer_json():
    r = crumb_cli("bench", "issuer", "--json", "--processes", "2", "--duration", "0.5", "--rounds", "1",
                  "--connections", "8")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for key in ("tokens_per_s", "p50_ms", "p99_ms", "bare_per_s", "refused", "errors"):
        assert key in result, key
    assert result["errors"] == 0 and result["refused"] == 0, result
    assert result["tokens_per_s"] > 0 and result["bare_per_s"] > 0
    assert result["single_process"]["tokens_per_s"] > 0 and result["store"] == "redis"
    assert result["verified_tokens"] > 0  # sampled tokens verified with the published key
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    # CPU per answer, from the servers' threads in /proc: the issuer's loop does more than the bare one,
    # and signing and the audit log run on its other threads.
    cpu = result["cpu_per_answer_us"]
    assert cpu["issuer_loop"] > cpu["bare_loop"] > 0 and cpu["issuer_other_threads"] > 0
    assert 0 < result["loop_busy"]["issuer"] <= 1.05 and 0 < result["loop_busy"]["bare"] <= 1.05
