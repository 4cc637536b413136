"""A time budget on the monotonic clock, so a changed wall clock cannot stretch or cut it."""

from __future__ import annotations

import time
from collections.abc import Callable

from jupyter_exec.units import parse_duration

__all__ = ["Timer"]


class Timer:
    """``Timer("30m")``, ``Timer("2h")``, ``Timer(90)``; ``None`` never runs out.

    A string that is not a duration raises ``SpecError`` rather than meaning "no limit".
    """

    def __init__(self, budget: str | float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = None if budget is None else parse_duration(budget, "time_budget")
        self._clock = clock
        self.started = clock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    @property
    def remaining(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.elapsed)

    @property
    def expired(self) -> bool:
        return self.budget is not None and self.elapsed >= self.budget
