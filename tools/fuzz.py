#!/usr/bin/env python3
"""Run one coverage-guided fuzz target (atheris), replay inputs, or write the seed corpus.

    python tools/fuzz.py --list
    python tools/fuzz.py verify --seconds 60 [--json]
    python tools/fuzz.py verify --replay fuzz/crashes/verify/crash-1f2e...
    python tools/fuzz.py --write-seeds

A run starts atheris in a child process (atheris sets up and fuzzes once per
process), fuzzing from the committed corpus (tests/fuzz/corpus/TARGET/) and
the run's own growing corpus (fuzz/corpus/TARGET/, git-ignored). Each input
goes through the target; inputs that take far longer than usual (and every
64th) run again under the bounded-work guard, which counts calls. A finding (an exception
other than the code's typed errors, a broken invariant, work over the bound)
is counted and the fuzzing goes on; the first input of each distinct finding
is saved to fuzz/crashes/TARGET/ (git-ignored), as are inputs libFuzzer
itself stops on (timeout-*, oom-*). docs/hardening.md is the guide.

With --json it prints one object: {"target", "executions", "crashes",
"seconds", "findings": [...], ...}. The exit status is 0 without crashes,
1 with crashes, 2 when the run could not happen.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = ROOT / "tests" / "fuzz" / "corpus"
# The run's own corpus and the crashes it saves (git-ignored); CRUMB_FUZZ_WORK moves them (the tool's tests).
WORK_DIR = Path(os.environ.get("CRUMB_FUZZ_WORK") or ROOT / "fuzz")
SETUP_SLACK = 120  # seconds a child may take to start (imports, instrumentation, the corpus) and stop


def _targets() -> dict[str, Any]:
    # Imported late: the child must import crumb only inside atheris's instrumentation.
    from crumb.tooling.fuzz import TARGETS

    extra = os.environ.get("CRUMB_FUZZ_EXTRA_TARGETS")  # a module with TARGETS of its own (the tool's tests)
    if extra:
        import importlib

        return {**TARGETS, **importlib.import_module(extra).TARGETS}
    return TARGETS


# -- the child: atheris ---------------------------------------------------------------


def child(name: str, seconds: float, stats_path: Path, guard: bool, max_len: int, seeds_only: bool) -> None:
    import logging

    import atheris  # type: ignore[import-untyped]

    logging.disable(logging.CRITICAL)  # the issuer logs the internal errors we are looking for
    with atheris.instrument_imports(include=["crumb", "ucrumb"]):
        from crumb.tooling.fuzz.harness import dictionary, input_name, run_guarded, signature

        target = _targets()[name]
        run = target.runner()  # set up inside the block: the modules it imports are instrumented too
    crash_dir = WORK_DIR / "crashes" / name
    corpus_dir = WORK_DIR / "corpus" / name
    seed_dir = SEED_DIR / name
    if seeds_only:
        # Only the seed-* files, and a corpus of this run's own: the regression cases and what
        # earlier runs kept are left out, so whatever is found, this run found.
        corpus_dir = stats_path.with_name("corpus")
        seed_dir = stats_path.with_name("seeds")
        seed_dir.mkdir()
        for seed in (SEED_DIR / name).glob("seed-*"):
            (seed_dir / seed.name).write_bytes(seed.read_bytes())
    crash_dir.mkdir(parents=True, exist_ok=True)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"executions": 0, "findings": {}}
    started = time.monotonic()
    deadline = started + seconds

    def save() -> None:
        stats["seconds"] = round(time.monotonic() - started, 1)
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(stats_path)

    typical = [0.001]  # a running mean of the seconds an input takes

    def one(data: bytes) -> None:
        stats["executions"] += 1
        try:
            t0 = time.perf_counter()
            run(data)
            took = time.perf_counter() - t0
            typical[0] += (took - typical[0]) / 64
            # Counting calls costs about 8x, so only slow inputs (and every 64th) are run
            # again under the counter. Time only picks what to count; the verdict is the count.
            if guard and (took > 20 * typical[0] or stats["executions"] % 64 == 0):
                run_guarded(target, data)
        except Exception as e:  # noqa: BLE001 -- every escape is a finding: record it and go on
            sig = signature(e)
            found = stats["findings"].get(sig)
            if found is None:
                path = crash_dir / f"crash-{input_name(data)}"
                path.write_bytes(data)
                stats["findings"][sig] = {"signature": sig, "message": f"{type(e).__name__}: {e}"[:500],
                                          "inputs": 1, "file": _show(path)}
                save()
            else:
                found["inputs"] += 1
        if time.monotonic() >= deadline:
            save()
            os._exit(0)  # libFuzzer has no clean stop from inside an input; the stats are written

    save()
    argv = [sys.argv[0], f"-max_total_time={int(seconds) + 30}", "-timeout=30", "-rss_limit_mb=2048",
            f"-max_len={max_len}", f"-artifact_prefix={crash_dir}/", "-print_final_stats=1"]
    if target.words:
        words = stats_path.with_name("words.dict")
        words.write_text(dictionary(target.words))
        argv.append(f"-dict={words}")
    argv += [str(d) for d in (corpus_dir, seed_dir) if d.is_dir()]
    atheris.Setup(argv, one)
    atheris.Fuzz()


# -- the parent -----------------------------------------------------------------------


def fuzz(name: str, seconds: float, guard: bool, max_len: int, seeds_only: bool = False) -> dict[str, Any]:
    """Run the child; its stats plus whatever libFuzzer saved on its own."""
    crash_dir = WORK_DIR / "crashes" / name
    crash_dir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(crash_dir))
    with tempfile.TemporaryDirectory(prefix="crumb-fuzz-") as tmp:
        stats_path = Path(tmp) / "stats.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--seconds", str(seconds),
               "--stats", str(stats_path), "--max-len", str(max_len)] + ([] if guard else ["--no-work-guard"]) \
            + (["--seeds-only"] if seeds_only else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=seconds + SETUP_SLACK)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    text = log.decode(errors="replace")
    if stats is None:
        raise RuntimeError(f"the fuzzing child did not start (exit {proc.returncode}):\n{text[-3000:]}")
    findings = list(stats["findings"].values())
    # Inputs libFuzzer stopped on (a hang past -timeout, memory past -rss_limit_mb, a crash
    # of the interpreter itself): each is a finding of its own.
    for entry in sorted(set(os.listdir(crash_dir)) - before):
        if not entry.startswith("crash-") or not any(f["file"].endswith(entry) for f in findings):
            kind = entry.split("-", 1)[0]
            findings.append({"signature": f"libFuzzer {kind}", "message": _libfuzzer_reason(text),
                             "inputs": 1, "file": _show(crash_dir / entry)})
    return {"target": name, "executions": stats["executions"], "crashes": len(findings),
            "seconds": stats.get("seconds"), "mode": "atheris (coverage-guided)",
            "work_guard": guard, "seeds_only": seeds_only, "findings": findings, "exit": proc.returncode}


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _libfuzzer_reason(log: str) -> str:
    for line in log.splitlines():
        if "==ERROR: libFuzzer" in line or "ALARM" in line:
            return line.strip()[:300]
    return "stopped by libFuzzer (see its output)"


def replay(name: str, paths: list[Path], guard: bool) -> int:
    """Run inputs through the target without atheris; 1 if any is a finding."""
    import logging

    from crumb.tooling.fuzz.harness import run_guarded

    logging.disable(logging.CRITICAL)  # findings are printed here; the code's own logs only repeat them
    target = _targets()[name]
    files = [f for p in paths for f in (sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p])]
    bad = 0
    for f in files:
        data = f.read_bytes()
        try:
            calls = run_guarded(target, data) if guard else (target.runner()(data), 0)[1]
            print(f"ok       {f} ({len(data)} bytes, {calls} calls)")
        except Exception as e:  # noqa: BLE001 -- a finding: say which, go on with the next input
            bad += 1
            print(f"FINDING  {f}: {type(e).__name__}: {e}")
    return 1 if bad else 0


def write_seeds(names: list[str]) -> None:
    targets = _targets()
    for name in names:
        folder = SEED_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in targets[name].seeds().items():
            (folder / f"seed-{seed}").write_bytes(data)
        print(f"{folder.relative_to(ROOT)}: {len(targets[name].seeds())} seeds")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tools/fuzz.py", description="Run one crumb fuzz target under atheris (coverage-guided), "
        "replay inputs through a target, or write the seed corpus. docs/hardening.md is the guide.")
    p.add_argument("target", nargs="?", help="the target (--list names them)")
    p.add_argument("--list", action="store_true", help="print the target names, one per line")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    p.add_argument("--json", action="store_true", help="print one JSON object: target, executions, crashes, ...")
    p.add_argument("--replay", nargs="+", type=Path, metavar="PATH",
                   help="run these files (or every file in these folders) through the target, without atheris")
    p.add_argument("--write-seeds", action="store_true",
                   help="write each target's seeds to tests/fuzz/corpus/TARGET/ (all targets unless one is named)")
    p.add_argument("--no-work-guard", action="store_true",
                   help="do not count calls per input (faster; finds no unbounded work)")
    p.add_argument("--seeds-only", action="store_true",
                   help="fuzz from the seed-* inputs alone, in a fresh corpus: leave out the regression cases "
                        "and what earlier runs kept (does fuzzing find a known defect by itself?)")
    p.add_argument("--max-len", type=int, help="the longest input libFuzzer makes (default: the target's)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    guard = not args.no_work_guard

    if args.child:
        child(args.target, args.seconds, args.stats, guard, args.max_len, args.seeds_only)
        return 0
    targets = _targets()
    if args.list:
        print("\n".join(targets))
        return 0
    if args.write_seeds:
        write_seeds([args.target] if args.target else list(targets))
        return 0
    if args.target not in targets:
        p.error(f"name a target: {', '.join(targets)}" if args.target is None else
                f"unknown target {args.target!r}; --list names them")
    if args.replay:
        return replay(args.target, args.replay, guard)
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: F401 -- only to say clearly that it is missing
    except ImportError:
        print("tools/fuzz.py needs atheris (the dev extra: make setup, or pip install atheris)", file=sys.stderr)
        return 2
    try:
        result = fuzz(args.target, args.seconds, guard, args.max_len or targets[args.target].max_len, args.seeds_only)
    except RuntimeError as e:
        print(f"tools/fuzz.py: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['target']}: {result['executions']} executions in {result['seconds']} s, "
              f"{result['crashes']} crash(es) [{result['mode']}{', work guard' if guard else ''}"
              f"{', seeds only' if args.seeds_only else ''}]")
        for f in result["findings"]:
            print(f"  {f['signature']}: {f['inputs']} input(s), first saved as {f['file']}\n    {f['message']}")
    return 1 if result["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
