"""The service benchmarks through the CLI: counts are asserted, timings only printed."""

from __future__ import annotations

import json
import subprocess
import sys


def crumb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, check=False, text=True,
                          timeout=timeout)


def test_bench_replay_accepts_each_of_10000_tokens_exactly_once():
    # The full bar: 10,000 single-use tokens, each presented to both verifier
    # processes at once, through one real redis-server the command starts.
    run = crumb("bench", "replay", "--json")
    assert run.returncode == 0, run.stderr + run.stdout
    result = json.loads(run.stdout)
    print({k: result[k] for k in ("seconds", "presentations_per_s", "accepted_per_process")})
    assert result["tokens"] == 10_000 and result["presentations"] == 20_000
    assert result["accepted"] == 10_000
    assert result["replayed"] == 10_000
    assert result["errors"] == 0 and result["error_codes"] == {}
    assert result["redis_keys_after"] == 10_000  # one key per token, each expiring with it


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
