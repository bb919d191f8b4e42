#!/usr/bin/env python3
"""Run crumb's attack and fault classes, and its fuzz targets, and say what held.

    .venv/bin/python tools/hardening.py [--json] [--quick] [--fuzz-seconds N] [--only CLASS ...]

Each class is a set of pytest node ids from the suite (CLASSES below): the
tests that attack one part (issuer, verifier, middleware, MQTT consumer,
audit log, device client) or put one fault on a real process. The script
drives pytest over them in a child process and reads its JUnit XML: a case
*held* when its test passed; it is *lost* when the test failed, errored, was
skipped, or is marked xfail (a known defect: the attack or fault still
wins). The issuer's classes run twice, with the native (C) audit writer and
with CRUMB_NATIVE=0 (the Python path).

With ``--fuzz-seconds N`` every target of tools/fuzz.py (``--list``) runs
for N seconds (``tools/fuzz.py TARGET --seconds N --json``).

Output: one row per class ``{class, kind, cases, held, lost}`` and one per
fuzz target ``{target, executions, crashes}``; ``--json`` prints them as one
JSON object. Exit status: 0 when every class has cases and lost none and no
fuzz target crashed; 1 otherwise (including fuzzing asked for but not
possible); 2 for a usage error. ``--quick`` runs a few fast cases of each
class (tests/faults/test_hardening.py runs it over a sample of classes); the
full run is the bar.
docs/hardening.md says more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "tools" / "fuzz.py"
# Only catches a hang: the full run takes minutes; a loaded machine may take several times that.
RUN_TIMEOUT = 3 * 3600


@dataclass(frozen=True)
class Class:
    name: str
    kind: str  # "attack" or "fault"
    full: tuple[str, ...]  # pytest node ids (files, or file::test) of the full run
    quick: tuple[str, ...]  # the few fast ones of --quick
    both_paths: bool = False  # run once with the native audit writer and once with CRUMB_NATIVE=0


ISS = "tests/issuer/"
HOST = "tests/host/"
SVC = "tests/services/"
FLT = "tests/faults/"

CLASSES: tuple[Class, ...] = (
    Class("issuer: forged, replayed and malformed token requests", "attack",
          full=(ISS + "test_http.py::test_replayed_nonce", ISS + "test_http.py::test_bad_mac_and_foreign_key",
                ISS + "test_http.py::test_unknown_device_with_a_valid_key", ISS + "test_http.py::test_scope_denied",
                ISS + "test_http.py::test_batch_over_the_limit",
                ISS + "test_http.py::test_revoked_device_gets_nothing_from_the_next_request_on",
                ISS + "test_http.py::test_rate_limited_with_retry_after", ISS + "test_http.py::test_malformed_cbor",
                ISS + "test_http.py::test_malformed_structures_even_when_signed", ISS + "test_http.py::test_malformed_json",
                ISS + "test_http.py::test_unsupported_media_type", ISS + "test_http.py::test_body_limit_is_enforced_before_reading",
                ISS + "test_http.py::test_body_limit_without_content_length",
                ISS + "test_http.py::test_lying_content_length_does_not_hang_or_crash",
                ISS + "test_http.py::test_fuzzed_requests_never_500", ISS + "test_http.py::test_unknown_paths_and_methods",
                ISS + "test_http.py::test_odd_values_are_typed_refusals_never_500",
                ISS + "test_http.py::test_only_canonical_resources_are_granted", ISS + "test_typed_refusals.py",
                ISS + "test_protocol.py", ISS + "test_differential.py", ISS + "test_limits.py",
                ISS + "test_redis.py::test_a_nonce_used_at_one_process_is_replayed_at_the_other"),
          quick=(ISS + "test_protocol.py::test_strict_parse_rejections",
                 ISS + "test_protocol.py::test_nesting_and_sizes_are_bounded"),
          both_paths=True),
    Class("issuer: oversized request heads and slow clients", "attack",
          full=(ISS + "test_http_limits.py",),
          quick=(ISS + "test_http_limits.py::test_an_oversized_head_earns_no_token",)),
    Class("issuer: policy and device lifecycle", "attack",
          full=(ISS + "test_policy.py", ISS + "test_lifecycle.py", ISS + "test_cli.py"),
          quick=(ISS + "test_policy.py::test_empty_policy_denies_everything",),
          both_paths=True),
    Class("verifier: token forgery", "attack",
          full=(HOST + "test_token.py", HOST + "test_chain.py", HOST + "test_attenuation.py", HOST + "test_vectors.py",
                HOST + "test_interop.py"),
          quick=(HOST + "test_token.py::test_signature_by_wrong_key_with_trusted_kid",
                 HOST + "test_token.py::test_unknown_critical_fields", HOST + "test_chain.py::test_forged_skip_and_reorder",
                 HOST + "test_chain.py::test_block_removal_duplication_splicing")),
    Class("verifier: CBOR and byte-level abuse", "attack",
          full=(HOST + "test_cbor.py", HOST + "test_bad_input.py", HOST + "test_properties.py", HOST + "test_cli.py"),
          quick=(HOST + "test_cbor.py::test_depth_bomb_is_bounded", HOST + "test_cbor.py::test_strict_rejections",
                 HOST + "test_bad_input.py::test_oversize_and_bombs")),
    Class("verifier: key sets", "attack",
          full=(SVC + "test_keys.py", SVC + "test_keys_malformed.py", ISS + "test_keyring.py"),
          quick=(SVC + "test_keys.py::test_off_contract_documents_are_refused_whole",
                 SVC + "test_keys_malformed.py::test_the_middleware_answers_with_a_verdict_not_a_500")),
    Class("verifier: replay under concurrency", "attack",
          full=(SVC + "test_replay_redis.py", SVC + "test_replay_invariant.py",
                SVC + "test_bench.py::test_bench_replay_accepts_each_token_exactly_once"),
          quick=(SVC + "test_replay_redis.py::test_many_threads_racing_for_one_token_one_wins",)),
    Class("middleware and hops", "attack",
          full=(SVC + "test_http_middleware.py", SVC + "test_rules.py", SVC + "test_asgi_scope.py", SVC + "test_hops.py",
                SVC + "test_chain.py"),
          quick=(SVC + "test_rules.py::test_canonical_paths_only",
                 SVC + "test_rules.py::test_no_rule_is_a_refusal_never_a_fall_through")),
    Class("MQTT consumer", "attack",
          full=(SVC + "test_mqtt.py",),
          quick=(SVC + "test_mqtt.py::test_rejected_messages_are_counted_logged_and_never_delivered",)),
    Class("audit log", "attack",
          full=(ISS + "test_audit.py",),
          quick=(ISS + "test_audit.py::test_verify_names_a_changed_record",
                 ISS + "test_audit.py::test_verify_names_a_relinked_record"),
          both_paths=True),
    Class("audit log: segments, archive and retention", "attack",
          full=(ISS + "test_rotation.py", ISS + "test_archive.py"),
          quick=(ISS + "test_rotation.py::test_a_record_repeated_in_a_later_segment_breaks_the_chain",
                 ISS + "test_archive.py::test_a_forged_anchor_is_caught_against_the_archive")),
    # Both writers side by side in one process (and the native one's own cases, which CRUMB_NATIVE=0 skips).
    Class("audit log: native and Python writers", "attack",
          full=(ISS + "test_commit.py",),
          quick=(ISS + "test_commit.py::test_issued_tokens_verify",)),
    Class("device client: hostile issuer and network", "attack",
          full=("tests/device/test_device_failures.py::test_cpython", "tests/device/test_device_https.py::test_cpython",
                "tests/device/test_device_cbor_props.py"),
          quick=("tests/device/test_device_failures.py::test_cpython[test_garbage]",
                 "tests/device/test_device_failures.py::test_cpython[test_huge_head]",
                 "tests/device/test_device_failures.py::test_cpython[test_issuer_down]")),
    Class("network attacker in the simulator", "attack",
          full=("tests/sim/test_attacker.py::test_no_attack_succeeds_and_each_is_refused_with_its_code",
                "tests/sim/test_attacker.py::test_mqtt_envelopes_published_again_are_refused"),
          quick=()),
    Class("fault: issuer killed mid-batch", "fault",
          full=(FLT + "test_issuer_killed.py", ISS + "test_redis.py::test_workers_do_not_outlive_a_killed_supervisor"),
          quick=(FLT + "test_issuer_killed.py::test_devices_retry_through_a_killed_issuer_and_the_audit_log_holds"
                       "[native]",)),
    # Each test runs both writers itself (CRUMB_NATIVE in the issuer's environment), so one run covers both.
    Class("fault: disk full while the audit log is written", "fault",
          full=(ISS + "test_disk_full.py",),
          quick=(ISS + "test_disk_full.py::test_a_full_disk_stops_issuance_and_no_token_goes_out_without_its_record",)),
    Class("fault: Redis stopped during verification", "fault",
          full=(FLT + "test_redis_outage.py", SVC + "test_replay_redis.py::test_unreachable_redis_fails_closed_then_recovers",
                SVC + "test_replay_redis.py::test_a_stalled_redis_times_out",
                SVC + "test_http_middleware.py::test_store_unavailable_is_503",
                ISS + "test_redis.py::test_redis_down_fails_closed_then_recovers"),
          quick=(FLT + "test_redis_outage.py",)),
    Class("fault: Mosquitto restarted", "fault",
          full=(FLT + "test_mosquitto_restart.py",),
          quick=(FLT + "test_mosquitto_restart.py",)),
    Class("fault: verifier restarted", "fault",
          full=(FLT + "test_restart_fence.py", SVC + "test_replay_redis.py::test_a_flushed_redis_sets_a_new_fence"),
          quick=(FLT + "test_restart_fence.py::test_a_token_spent_before_a_restart_is_refused_after_it",)),
    Class("fault: clock skew beyond the leeway", "fault",
          full=(FLT + "test_clock_skew.py", "tests/device/test_device_e2e.py::test_issuer_clock_jump"),
          quick=(FLT + "test_clock_skew.py::test_a_device_clock_off_beyond_max_skew_is_refused_then_resyncs[3600]",
                 FLT + "test_clock_skew.py::test_a_service_clock_off_beyond_its_leeway_refuses_with_the_code"
                       "[behind beyond the leeway]")),
)

PATHS = {"native": {}, "python": {"CRUMB_NATIVE": "0"}}


@dataclass
class Row:
    name: str
    kind: str
    cases: int = 0
    held: int = 0
    lost: int = 0
    lost_ids: list[str] = field(default_factory=list)

    def json(self) -> dict[str, object]:
        return {"class": self.name, "kind": self.kind, "cases": self.cases, "held": self.held, "lost": self.lost,
                "lost_cases": self.lost_ids}


def _belongs(nodeid: str, selection: str) -> bool:
    return nodeid == selection or nodeid.startswith((selection + "::", selection + "["))


def _nodeid(case: ET.Element) -> str:
    # xunit2 names a case by the node id's path (dots for slashes, no ".py") and its name.
    parts = case.get("classname", "").split(".")
    module, cls = "/".join(parts), ""
    if not (REPO / f"{module}.py").is_file() and len(parts) > 1:  # a test class: the last part is its name
        module, cls = "/".join(parts[:-1]), parts[-1] + "::"
    return f"{module}.py::{cls}{case.get('name', '')}"


def _held(case: ET.Element) -> bool:
    # Passed: no failure, error or skipped child. An xfail is reported as skipped: a known, open defect.
    return not any(child.tag in ("failure", "error", "skipped") for child in case)


def run_pytest(nodeids: Sequence[str], env: dict[str, str]) -> dict[str, bool]:
    """{node id: held} for every case pytest ran; raises RuntimeError when pytest itself could not run."""
    with tempfile.TemporaryDirectory(prefix="crumb-hardening-") as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit2",
               f"--junitxml={report}", *nodeids]
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, check=False)
        # 0 all passed, 1 some failed: both leave a report. Anything else (usage error, no tests, interrupted)
        # means the classes were not run as listed.
        if proc.returncode not in (0, 1) or not report.exists():
            raise RuntimeError(f"pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        root = ET.parse(report).getroot()
        return {_nodeid(case): _held(case) for case in root.iter("testcase")}


def run_classes(classes: Sequence[Class], quick: bool) -> list[Row]:
    rows: list[Row] = []
    for path, env in PATHS.items():
        chosen = [c for c in classes if c.both_paths or path == "native"]
        # A class with no fast case is left out of --quick (and says so), not reported empty.
        chosen = [c for c in chosen if (c.quick if quick else c.full)]
        selections = {c.name: (c.quick if quick else c.full) for c in chosen}
        nodeids = sorted({s for sel in selections.values() for s in sel})
        results = run_pytest(nodeids, env) if nodeids else {}
        for c in chosen:
            row = Row(f"{c.name} [{path} path]" if c.both_paths else c.name, c.kind)
            for nodeid, held in sorted(results.items()):
                if any(_belongs(nodeid, s) for s in selections[c.name]):
                    row.cases += 1
                    row.held += held
                    if not held:
                        row.lost += 1
                        row.lost_ids.append(nodeid)
            rows.append(row)
    return rows


def run_fuzz(seconds: float) -> tuple[list[dict[str, Any]], str | None]:
    """(rows, None) or ([], why fuzzing could not run)."""
    if not FUZZ.is_file():
        return [], f"fuzzing not run: {FUZZ.relative_to(REPO)} is absent"
    listed = subprocess.run([sys.executable, str(FUZZ), "--list"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    targets = [t.strip() for t in listed.stdout.splitlines() if t.strip()]
    if listed.returncode != 0 or not targets:
        return [], f"fuzzing not run: tools/fuzz.py --list exited {listed.returncode} with no targets"
    rows = []
    for target in targets:
        p = subprocess.run([sys.executable, str(FUZZ), target, "--seconds", str(seconds), "--json"], cwd=REPO,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        try:
            got = json.loads(p.stdout.strip().splitlines()[-1])
            row = {"target": got["target"], "executions": int(got["executions"]), "crashes": int(got["crashes"])}
            if row["crashes"]:  # what was found and where the input is, so a lost run can be replayed
                row["findings"] = [{"message": f.get("message"), "file": f.get("file")} for f in got.get("findings", [])]
        except (IndexError, KeyError, TypeError, ValueError):
            # A target that cannot report is counted as a crash: its inputs were not shown to be handled.
            row = {"target": target, "executions": 0, "crashes": 1,
                   "error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-500:]}"}
        rows.append(row)
    return rows, None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="a few fast cases per class (a smoke test)")
    ap.add_argument("--fuzz-seconds", type=float, metavar="N", help="run every fuzz target for N seconds")
    ap.add_argument("--only", action="append", metavar="CLASS", help="only classes whose name contains CLASS")
    args = ap.parse_args(argv)
    if args.fuzz_seconds is not None and args.fuzz_seconds <= 0:
        ap.error("--fuzz-seconds must be positive")
    classes = [c for c in CLASSES if not args.only or any(o in c.name for o in args.only)]
    if not classes:
        ap.error(f"no class matches {args.only}")
    try:
        rows = run_classes(classes, args.quick)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"hardening: the tests could not run: {e}", file=sys.stderr)
        return 1
    fuzz: list[dict[str, Any]] = []
    fuzz_note = "fuzzing not run (no --fuzz-seconds)"
    fuzz_failed = False
    if args.fuzz_seconds is not None:
        fuzz, why = run_fuzz(args.fuzz_seconds)
        fuzz_note = why or f"{len(fuzz)} targets, {args.fuzz_seconds:g} s each"
        fuzz_failed = why is not None
    empty = [r.name for r in rows if r.cases == 0]
    lost = sum(r.lost for r in rows)
    crashes = sum(f["crashes"] for f in fuzz)
    ok = not empty and lost == 0 and crashes == 0 and not fuzz_failed
    if args.json:
        print(json.dumps({"mode": "quick" if args.quick else "full", "ok": ok,
                          "classes": [r.json() for r in rows], "fuzz": fuzz, "fuzz_note": fuzz_note,
                          "lost": lost, "crashes": crashes, "empty_classes": empty,
                          "not_run": [c.name for c in classes if args.quick and not c.quick]}))
    else:
        width = max(len(r.name) for r in rows)
        print(f"{'class':<{width}}  {'cases':>5}  {'held':>5}  {'lost':>5}")
        for r in rows:
            print(f"{r.name:<{width}}  {r.cases:>5}  {r.held:>5}  {r.lost:>5}")
            for nodeid in r.lost_ids:
                print(f"    lost: {nodeid}")
        for f in fuzz:
            print(f"fuzz {f['target']}: {f['executions']} executions, {f['crashes']} crashes")
        print(fuzz_note)
        for name in empty:
            print(f"no case ran for {name!r}: its test ids are out of date")
        print("ok" if ok else "NOT OK")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
