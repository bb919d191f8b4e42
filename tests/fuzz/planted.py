"""Targets with planted bugs, for testing tools/fuzz.py itself (CRUMB_FUZZ_EXTRA_TARGETS=tests.fuzz.planted)."""

from __future__ import annotations

from collections.abc import Callable

from crumb.tooling.fuzz import Target


def _planted_setup() -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        if data[:1] == b"w":
            for _ in range(5_000):  # unbounded work, as far as the guard below is concerned
                abs(-1)
        elif data[:1] == b"t":
            raise TypeError("planted: an untyped exception")

    return run


TARGETS = {"planted": Target("planted", "a TypeError on inputs starting with 't', 5,000 calls on 'w'",
                             _planted_setup, 1_000, lambda: {"start": b"a"})}
