"""Shared timing for the benchmark scripts (each script is run directly: ``python benchmarks/X.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], runs: int, between: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` in milliseconds; ``between`` runs untimed before each call."""
    times = []
    for _ in range(runs):
        if between:
            between()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def paired_medians_ms(first: Callable[[], object], second: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall times of ``first`` and ``second`` in milliseconds, called in turn ``runs``
    times each: a machine whose load comes and goes weighs on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, spent in zip((first, second), times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000
