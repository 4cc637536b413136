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
