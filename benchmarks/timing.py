"""Shared timing for the benchmark scripts (each script is run directly: ``python benchmarks/X.py``).

Every published figure is a pair: our side and its twin doing the same work, measured in one
process, interleaved call by call (``interleaved``), so a machine whose load comes and goes, or
deferred work one side leaves behind (a container's removal, a pool's refill), weighs on both.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """The wall times of one side's calls, in milliseconds."""

    times_ms: tuple[float, ...]

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0.5: the median), interpolated between the two nearest calls."""
        ordered = sorted(self.times_ms)
        at = q * (len(ordered) - 1)
        low = int(at)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (at - low)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    def summary(self) -> dict[str, float]:
        """What a row keeps of it: median, p90, p99 and the count."""
        return {
            "median": self.median,
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "n": len(self.times_ms),
        }


@dataclass
class LoadWatch:
    """The one-minute load average, read whenever ``look`` is called: its lowest and highest."""

    seen: list[float] = field(default_factory=list)

    def look(self) -> None:
        self.seen.append(os.getloadavg()[0])

    @property
    def span(self) -> tuple[float, float]:
        if not self.seen:
            self.look()
        return min(self.seen), max(self.seen)


def interleaved(
    sides: Mapping[str, Callable[[], object]],
    rounds: int,
    pause: float = 0.0,
    load: LoadWatch | None = None,
) -> dict[str, Sample]:
    """Each side called once per round, the order turning by one each round (so each side
    follows every other equally often); an untimed ``pause`` (seconds) before every call, the
    same for all sides. ``load`` is read once per round."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            sides[name]()
            times[name].append((time.perf_counter() - start) * 1000)
        if load is not None:
            load.look()
    return {name: Sample(tuple(spent)) for name, spent in times.items()}


def median_ms(fn: Callable[[], object], runs: int, between: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` in milliseconds; ``between`` runs untimed before each call
    (for figures that are not pairs: the store's, the schedulers')."""
    times = []
    for _ in range(runs):
        if between:
            between()
        times.append(timed_ms(fn))
    return statistics.median(times)


def timed_ms(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``, in milliseconds."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def notebook_shell() -> Any:
    """An IPython shell with the extension loaded, its store in a fresh directory (unless
    ``JX_DATA_DIR`` says where): cells go through the magic as a notebook's do."""
    os.environ.setdefault("JX_DATA_DIR", tempfile.mkdtemp(prefix="jx-bench-"))
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_exec")
    return shell


def use_manager(shell: Any, manager: Any) -> None:
    """Point the shell's jupyter-exec magics at ``manager``: two Managers (say, pool on and pool
    off) can then take turns through the same magic in one process."""
    from jupyter_exec.manager import Manager

    for magics in shell.magics_manager.registry.values():
        if isinstance(getattr(magics, "manager", None), Manager):
            magics.manager = manager
