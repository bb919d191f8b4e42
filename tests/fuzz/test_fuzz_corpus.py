"""Every fuzz target over its committed corpus, deterministically (no atheris needed).

The corpus (tests/fuzz/corpus/TARGET/) holds the seeds (seed-*, written by
tools/fuzz.py --write-seeds) and every crash fuzzing or an attack found, as a
regression case named after it. A case that reproduces a defect not fixed
yet is listed in KNOWN_DEFECTS and expected to fail (strictly: once the fix
lands the test turns red, and its line here is deleted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crumb.tooling.fuzz import TARGETS, Finding, run_guarded

CORPUS = Path(__file__).parent / "corpus"

# corpus file -> (issue 16 defect, the exception it raises today). Defect 1's cases (keyset/d1-*,
# keyfetch/d1-*) are plain regressions now that every key parser raises only typed errors.
KNOWN_DEFECTS: dict[str, tuple[int, type[BaseException]]] = {}


def _cases() -> list:
    cases = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            key = f"{folder.name}/{path.name}"
            marks = []
            if key in KNOWN_DEFECTS:
                defect, raises = KNOWN_DEFECTS[key]
                marks.append(pytest.mark.xfail(strict=True, raises=raises, reason=f"issue 16 defect {defect}"))
            cases.append(pytest.param(folder.name, path, id=key, marks=marks))
    return cases


@pytest.fixture(scope="module", autouse=True)
def _close_targets():
    yield
    for target in TARGETS.values():  # the responders and the in-process issuer some targets started
        close = getattr(target._run, "close", None)
        if close is not None:
            close()
            target._run = None


@pytest.mark.parametrize(("name", "path"), _cases())
def test_corpus_input_raises_only_typed_errors(name, path):
    run_guarded(TARGETS[name], path.read_bytes())


def test_every_target_has_its_seeds_in_the_corpus():
    """The committed seeds are what the targets' seed functions make today (else: tools/fuzz.py --write-seeds)."""
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)
    for name, target in TARGETS.items():
        seeds = target.seeds()
        assert seeds, name
        on_disk = {p.name[len("seed-"):]: p.read_bytes() for p in (CORPUS / name).glob("seed-*")}
        assert on_disk == seeds, f"{name}: the committed seeds are stale; run tools/fuzz.py --write-seeds"


def test_known_defects_name_files_that_exist():
    for key in KNOWN_DEFECTS:
        assert (CORPUS / key).is_file(), key


def test_work_guard_has_headroom_and_bites():
    """Every seed stays under a tenth of its target's bound; a bound below a seed's count is a finding."""
    for name, target in TARGETS.items():
        for seed, data in target.seeds().items():
            calls = run_guarded(target, data)
            assert 0 < calls <= target.max_calls // 10, (name, seed, calls)
    target = TARGETS["cbor"]
    bound = target.max_calls
    try:
        target.max_calls = 1
        with pytest.raises(Finding, match="calls for a"):
            run_guarded(target, target.seeds()["token-plain"])
    finally:
        target.max_calls = bound
