"""Shared timing for the benchmark scripts (each script is run directly: ``python benchmarks/X.py``)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any


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


def notebook_shell() -> Any:
    """An IPython shell with the extension loaded, its store in a fresh directory (unless
    ``JX_DATA_DIR`` says where): cells go through the magic as a notebook's do."""
    os.environ.setdefault("JX_DATA_DIR", tempfile.mkdtemp(prefix="jx-bench-"))
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_exec")
    return shell
