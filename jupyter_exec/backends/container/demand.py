"""How many warm containers a pool key should have: as many as its cells use up while new
ones are being made.

Cells typed by a person come seconds apart, and one warm container (``ExecConfig.pool_size``)
is enough. Cells that follow each other — a notebook re-run, a loop, a map — come faster
than a container can be made (a few hundred milliseconds): by Little's law, cells arriving
every ``gap`` seconds while a container takes ``make`` seconds need about ``make / gap``
containers on their way at once, or each cell waits for its own. The gap is the cells'
own pace: time a cell spent waiting for its container is left out, or cells held up by
a short pool would seem to come no faster than containers are made, and the pool would
never grow. ``Demand`` watches one key's takes and the pool's creation times and says how
many that is, between ``least`` and ``most`` (the cap: ``DockerConfig.pool_max``, bounded
by the administrator's policy); a key not taken from for ``quiet`` seconds falls back to
``least``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Demand"]


class Demand:
    """The observed rate of takes and time to make a container, for one pool key."""

    def __init__(
        self,
        least: int,
        most: int,
        *,
        window: int = 8,
        quiet: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.least, self.most, self.quiet, self.clock = least, max(least, most), quiet, clock
        self._takes: deque[float] = deque(maxlen=window)  # on a clock that stops while cells wait
        self._waited = 0.0
        self._last = -math.inf  # when the last take was, on the real clock
        self._make: float | None = None  # seconds to make and start one, smoothed

    def took(self, waited: float = 0.0) -> None:
        """A container of this key was handed out, after the cell waited ``waited`` seconds for it."""
        self._last = self.clock()
        self._waited += waited
        self._takes.append(self._last - self._waited)

    def made(self, seconds: float) -> None:
        """A container of this key took ``seconds`` to make and start."""
        self._make = seconds if self._make is None else 0.7 * self._make + 0.3 * seconds

    def target(self) -> int:
        """How many containers the key should have, warm or on their way."""
        takes = self._takes
        if len(takes) < 2 or self._make is None or self.clock() - self._last > self.quiet:
            return self.least
        gap = max((takes[-1] - takes[0]) / (len(takes) - 1), 1e-3)
        return max(self.least, min(self.most, math.ceil(self._make / gap)))
