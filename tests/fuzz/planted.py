"""Targets with planted bugs, for testing tools/fuzz.py itself (CRUMB_FUZZ_EXTRA_TARGETS=tests.fuzz.planted)."""

from __future__ import annotations

from collections.abc import Callable

from crumb.tooling.fuzz import Target


def _planted_setup() -> Callable[[bytes], None]:
    # Half of all non-empty inputs hit each bug, so any run of a few hundred inputs finds both.
    def run(data: bytes) -> None:
        if not data:
            return
        if data[0] % 2:
            for _ in range(5_000):  # unbounded work, as far as the bound below is concerned
                abs(-1)
        else:
            raise TypeError("planted: an untyped exception")

    return run


TARGETS = {"planted": Target("planted", "a TypeError on inputs whose first byte is even, 5,000 calls on odd",
                             _planted_setup, 1_000, lambda: {"start": b""})}
