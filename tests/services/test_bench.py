"""The service benchmarks through the CLI: counts are asserted, timings only printed."""

from __future__ import annotations

import json
import subprocess
import sys


def crumb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True,
                          timeout=timeout)


def test_bench_replay_accepts_each_token_exactly_once():
    # The same bar as `crumb bench replay` (10,000 tokens, `make bench`), on 2,000 single-use tokens
    # to keep the suite short: each presented to both verifier processes at once (4 threads each),
    # through one real redis-server the command starts; every token accepted exactly once.
    run = crumb("bench", "replay", "--json", "--tokens", "2000")
    assert run.returncode == 0, run.stderr + run.stdout
    result = json.loads(run.stdout)
    print({k: result[k] for k in ("seconds", "presentations_per_s", "accepted_per_process")})
    assert result["tokens"] == 2_000 and result["presentations"] == 4_000
    assert result["accepted"] == 2_000
    assert result["replayed"] == 2_000
    assert result["errors"] == 0 and result["error_codes"] == {}
    assert result["redis_keys_after"] == 2_000  # one key per token, each expiring with it


def test_bench_middleware_reports_both_variants():
    run = crumb("bench", "middleware", "--json", "--requests", "200")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    print({k: result[k] for k in ("overhead_ms_median", "inprocess")})
    assert result["errors"] == 0
    for variant in ("without", "with"):
        assert result[variant]["requests"] == 200 and result[variant]["requests_per_s"] > 0
        assert result[variant]["median_ms"] > 0
    assert isinstance(result["overhead_ms_median"], float)
    text = crumb("bench", "middleware", "--requests", "100")
    assert "overhead_ms_median" in text.stdout and "requests/s" in text.stdout
