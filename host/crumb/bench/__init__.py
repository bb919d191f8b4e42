"""Benchmarks behind `crumb bench`. Each returns a dict of figures (medians)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_us(samples_ns: list[int]) -> float:
    return round(statistics.median(samples_ns) / 1000, 2)


def time_each(fn: Callable[[object], object], items: list) -> list[int]:
    """Time fn(item) for each item; nanoseconds per call."""
    out = []
    clock = time.perf_counter_ns
    for item in items:
        t0 = clock()
        fn(item)
        out.append(clock() - t0)
    return out
