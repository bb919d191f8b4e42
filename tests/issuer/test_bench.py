"""`crumb bench issuer` runs end to end and reports what the issue asks for.

A smoke test at the smallest size: every field it promises, and the counts
(errors, refusals, verified tokens). Its speeds and CPU shares are this
machine's at this moment, so they are only checked to be there: comparing
them is `make bench`'s business, never the suite's.
"""

from __future__ import annotations

import json
import socket
import threading

from crumb.tooling.bench.issuer import SAMPLES, drive, render

from .conftest import crumb_cli

NUMBER = (int, float)


def test_bench_issuer_json():
    r = crumb_cli("bench", "issuer", "--json", "--processes", "2", "--duration", "0.5", "--rounds", "1",
                  "--connections", "8")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    for key in ("tokens_per_s", "p50_ms", "p99_ms", "bare_per_s", "ratio_to_bare", "refused", "errors",
                "speedup_vs_single", "ratio_to_bare_single"):
        assert isinstance(result[key], NUMBER), key
    assert result["errors"] == 0 and result["refused"] == 0, result
    assert result["tokens_per_s"] > 0 and result["bare_per_s"] > 0  # each answered at least once
    assert len(result["rounds_ratio_to_bare"]) == result["rounds"] == 1
    assert result["rounds_ratio_to_bare"][0] == result["ratio_to_bare"]
    assert result["single_process"]["tokens_per_s"] > 0 and result["store"] == "redis"
    assert result["verified_tokens"] > 0  # sampled tokens verified with the published key
    # Which audit writer the measured issuers ran (they inherit this environment, CRUMB_NATIVE included).
    from crumb.issuer import _native

    assert result["native"] is _native.NATIVE and result["audit_writer"] == _native.describe()
    assert render(result).splitlines()[0] == f"audit writer: {_native.describe()}"
    assert result["p50_ms"] <= result["p99_ms"]
    # CPU per answer, from the servers' threads in /proc, and the load generator's own (it shares the
    # cores), per target: reported, not compared.
    assert set(result["cpu_per_answer_us"]) == {"issuer_loop", "issuer_other_threads", "bare_loop",
                                                "multi_loops", "multi_other_threads"}
    assert set(result["loop_busy"]) == {"issuer", "bare", "multi"}
    assert set(result["client_cpu_per_answer_us"]) == {"bare", "issuer", "multi"}
    for figures in (result["cpu_per_answer_us"], result["loop_busy"], result["client_cpu_per_answer_us"]):
        assert all(isinstance(v, NUMBER) and v >= 0 for v in figures.values()), figures


def test_sampled_tokens_are_verified_as_they_arrive():
    """Issue 16, defect 14: the bench verified its sampled tokens only after every round, by when they had
    expired (`--rounds 4 --duration 15` ended in a traceback, crumb.errors.Expired). With tokens that live
    2 s, two rounds take longer than that, so checking after the rounds fails; checking each sample as it
    arrives does not. (The bench's verifier allows no clock leeway: its issuer is on this host.)"""
    r = crumb_cli("bench", "issuer", "--json", "--rounds", "2", "--duration", "1", "--connections", "4",
                  "--ttl", "2")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    result = json.loads(r.stdout)
    assert result["token_ttl_s"] == 2
    assert result["verification_failures"] == {} and result["errors"] == 0 and result["refused"] == 0, result
    assert result["verified_tokens"] == 2 * SAMPLES, result  # each round's first answers, in its one client process
    assert isinstance(result["response_bytes"], int) and result["tokens_per_s"] > 0


def test_a_bench_that_cannot_run_says_why_in_one_line(tmp_path):
    # An issuer URL where nothing answers: an error line and exit 2, not a traceback.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
        port = s.getsockname()[1]
        r = crumb_cli("bench", "issuer", "--url", f"http://127.0.0.1:{port}", "--data", str(tmp_path / "data"),
                      "--rounds", "1", "--duration", "0.5", "--connections", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: crumb bench issuer: RuntimeError: cannot read the issuer's keys"), r.stderr


def _serve_once(answer: bytes | None) -> tuple[int, threading.Thread]:
    """A server that reads one request per connection, then sends ``answer`` (if any) and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def run() -> None:
        listener.settimeout(60)  # then the thread ends; generous, for a load generator slow to start
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
        # A request goes out only within the run: 2 s, so that even a stalled machine sends one.
        r = drive(port, devices, 2.0, 1, warmup=0.0)
        assert r["ok"] == 0 and r["errors"] >= 1, r
        assert set(r["error_kinds"]) == {kind}, r["error_kinds"]
