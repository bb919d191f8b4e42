"""What a fuzz target is, and what counts as a finding.

A target is one function from bytes to nothing. It calls the code under test
and swallows exactly that code's typed errors (``crumb.errors.CrumbError``,
the issuer's ``Refusal``, ``KeySetError``, the device's ``CBORError``, ...).
Anything else that escapes is a finding: an untyped exception (``TypeError``,
``AttributeError``, ``OverflowError``, ``UnicodeEncodeError``), a
``RecursionError``, a broken invariant (``Finding``, e.g. two decoders that
disagree), or more work than the target's bound (``WorkExceeded``).

The same functions run under atheris (tools/fuzz.py), over the committed
corpus (tests/fuzz/test_fuzz_corpus.py) and under hypothesis
(tests/fuzz/test_fuzz_properties.py), so a crash found by one is replayed by
the others byte for byte.
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any


class Finding(AssertionError):
    """An invariant the target checks does not hold for this input.

    ``kind`` names the way it failed (say, which decoder accepted), so that
    a run counts different failures of one invariant as different findings.
    """

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class WorkExceeded(Finding):
    """The input made the code do more work than the target's bound allows."""


@dataclass
class Target:
    """One fuzz target.

    Attributes:
        name: the name on the command line and of its corpus folder.
        doc: one line: what it feeds and to what.
        setup: builds the target's state once per process (keys, servers) and
            returns the function that takes one input.
        max_calls: the bounded-work guard: Python and C function calls one
            input may cause (counted by ``count_calls``), far above what any
            valid input needs and far below what an unbounded loop reaches.
        seeds: the seed inputs, by name (tools/fuzz.py --write-seeds writes
            them to the corpus).
        max_len: the longest input libFuzzer makes for it (a little above the
            size limit of what it parses, so the limit itself is exercised).
        words: byte strings libFuzzer may splice into inputs (its -dict):
            the tokens of the format that random mutation rarely spells.
    """

    name: str
    doc: str
    setup: Callable[[], Callable[[bytes], None]]
    max_calls: int
    seeds: Callable[[], dict[str, bytes]] = field(default=dict)
    max_len: int = 4200
    words: tuple[bytes, ...] = ()
    _run: Callable[[bytes], None] | None = None

    def runner(self) -> Callable[[bytes], None]:
        """The function that takes one input (set up on first use)."""
        if self._run is None:
            self._run = self.setup()
        return self._run


class CallCounter:
    """Counts function calls (Python and C) while active, through sys.setprofile.

    A count of calls, not a time: the same input gives the same count on any
    machine, so bounds on it are deterministic.
    """

    def __init__(self) -> None:
        self.calls = 0

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        # atheris's coverage hooks (_trace_branch, _trace_cmp, ...) are C calls its
        # instrumentation adds to the code under test: about 5x the calls of an
        # uninstrumented run. They are not the code's work, so they do not count,
        # and an input costs the same under the fuzzer as on --replay.
        if event == "call" or (event == "c_call" and getattr(arg, "__module__", None) != "atheris.native"):
            self.calls += 1


@contextmanager
def count_calls() -> Iterator[CallCounter]:
    counter = CallCounter()
    previous = sys.getprofile()
    sys.setprofile(counter._profile)
    try:
        yield counter
    finally:
        sys.setprofile(previous)


def run_guarded(target: Target, data: bytes) -> int:
    """Run one input with the bounded-work guard; returns the calls it made.

    Raises what the target raises, or WorkExceeded.
    """
    run = target.runner()
    with count_calls() as counter:
        run(data)
    if counter.calls > target.max_calls:
        raise WorkExceeded(f"{counter.calls} calls for a {len(data)}-byte input; "
                           f"the bound for {target.name} is {target.max_calls}")
    return counter.calls


def signature(exc: BaseException) -> str:
    """A short, stable name for a finding: the exception type and where it was raised.

    Two inputs with the same signature are the same bug, as far as a run's
    count of crashes goes.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1] if frames else None
    place = f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else "?"
    kind = getattr(exc, "kind", "")
    return f"{type(exc).__name__} at {place}" + (f" ({kind})" if kind else "")


def input_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def dictionary(words: tuple[bytes, ...]) -> str:
    """``words`` in libFuzzer's -dict format: one quoted string per line, bytes as \\xNN."""
    lines = []
    for w in words:
        lines.append('"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02X}" for b in w) + '"')
    return "\n".join(lines) + "\n"
