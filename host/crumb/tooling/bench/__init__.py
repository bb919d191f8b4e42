"""Benchmarks behind `crumb bench`. Each returns a dict of figures (medians)."""

from __future__ import annotations

import statistics


def median_us(samples_ns: list[int]) -> float:
    return round(statistics.median(samples_ns) / 1000, 2)
