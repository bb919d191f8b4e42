"""`crumb bench issuer` runs end to end and reports what the issue asks for."""

from __future__ import annotations

import json
import socket
import threading

from crumb.tooling.bench.issuer import drive, render

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
    assert len(result["rounds_ratio_to_bare"]) == result["rounds"] == 1
    assert result["rounds_ratio_to_bare"][0] == result["ratio_to_bare"]
    assert result["single_process"]["tokens_per_s"] > 0 and result["store"] == "redis"
    assert result["verified_tokens"] > 0  # sampled tokens verified with the published key
    # Which audit writer the measured issuers ran (they inherit this environment, CRUMB_NATIVE included).
    from crumb.issuer import _native

    assert result["native"] is _native.NATIVE and result["audit_writer"] == _native.describe()
    assert render(result).splitlines()[0] == f"audit writer: {_native.describe()}"
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    # CPU per answer, from the servers' threads in /proc: the issuer's loop does more than the bare one,
    # and signing and the audit log run on its other threads.
    cpu = result["cpu_per_answer_us"]
    assert cpu["issuer_loop"] > cpu["bare_loop"] > 0 and cpu["issuer_other_threads"] > 0
    assert 0 < result["loop_busy"]["issuer"] <= 1.05 and 0 < result["loop_busy"]["bare"] <= 1.05
    # The load generator's own CPU (it shares the cores), per target.
    assert set(result["client_cpu_per_answer_us"]) == {"bare", "issuer", "multi"}
    assert all(v > 0 for v in result["client_cpu_per_answer_us"].values())


def _serve_once(answer: bytes | None) -> tuple[int, threading.Thread]:
    """A server that reads one request per connection, then sends ``answer`` (if any) and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def run() -> None:
        listener.settimeout(10)
        try:
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(4096)
                    if answer:
                        conn.sendall(answer)
        except OSError:
            pass
        finally:
            listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_the_load_generator_counts_broken_answers_as_errors():
    """A server that hangs up mid-request, or answers garbage, shows as errors, never as tokens."""
    devices = [("bench-0000", "00" * 32)]
    for answer, kind in ((None, "IncompleteReadError"), (b"HTTP/1.1 2x0 OK\r\ncontent-length: 3\r\n\r\nabc",
                                                          "ValueError")):
        port, _ = _serve_once(answer)
        r = drive(port, devices, 0.3, 1, warmup=0.0)
        assert r["ok"] == 0 and r["errors"] >= 1, r
        assert set(r["error_kinds"]) == {kind}, r["error_kinds"]
