"""A run's timeline: the moments of its life as named marks, kept in its record.

A mark is a name and an epoch time. The usual ones come in ``PHASES`` order: ``queued`` (the
cell asked: a cell's magic began), ``admitted`` (its backend ready and its spec admitted), ``recorded`` (its row in
the store, before anything starts), ``env_ready`` (its runtime
env built or found), ``sandbox_ready`` (a worker, container or Ray connection to run it in:
from the pool or made), ``started`` (the cell handed to it), ``first_output``, ``ended`` (the
backend has its outcome) and ``decoded`` (its values decoded in the kernel). A mark that does
not apply is absent (no output: no ``first_output``). Backends and later features add marks
of their own (``ray_started``, ``in_worker``: a Ray worker began the task; later a session's
fork, a network gate) without a new column: the
marks are data, and what is shown is the time between each mark and the one before it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import TypedDict

__all__ = ["PHASES", "Segment", "Timeline", "TimelineData", "breakdown", "parse", "percentile", "segments", "spans"]

PHASES = ("queued", "admitted", "recorded", "env_ready", "sandbox_ready", "started", "first_output", "ended", "decoded")

#: How a phase is shown: the mark that ends it -> a short word and the colour of its part of
#: the bar (the run panel, its transcript, the side panel); a mark of a backend's own is grey.
_SHOWN = {
    "frontend_asked": ("widget probe", "#bdbdbd"),
    "admitted": ("admit", "#9e9e9e"),
    "recorded": ("record", "#616161"),
    "ray_started": ("Ray start", "#6d4c41"),
    "ray_connected": ("Ray connect", "#6d4c41"),
    "in_worker": ("worker start", "#00897b"),
    "env_ready": ("env", "#8e24aa"),
    "sandbox_ready": ("sandbox", "#ef6c00"),
    "started": ("start", "#f9a825"),
    "first_output": ("first output", "#1565c0"),
    "ended": ("run", "#42a5f5"),
    "decoded": ("decode", "#2e7d32"),
}
_OTHER = "#757575"


class TimelineData(TypedDict):
    """A timeline as data: ``[[name, epoch seconds], ...]`` in time order, and a note per mark."""

    marks: list[tuple[str, float]]
    notes: dict[str, str]


class Timeline:
    """The marks of one run, as it goes. ``mark`` is cheap (a list append): it is on the hot path."""

    __slots__ = ("notes", "times")

    def __init__(self, start: float | None = None) -> None:
        self.times: dict[str, float] = {"queued": time.time() if start is None else start}
        self.notes: dict[str, str] = {}  # a mark's note: how the sandbox was had ("pool", "made")

    def mark(self, name: str, at: float | None = None, note: str | None = None) -> None:
        """Mark ``name`` now (or ``at``); a mark made already keeps its first time."""
        if name not in self.times:
            self.times[name] = time.time() if at is None else at
        if note:
            self.notes[name] = note

    def at(self, name: str) -> float | None:
        """When ``name`` was marked; None if it was not."""
        return self.times.get(name)

    @property
    def marks(self) -> list[tuple[str, float]]:
        """The marks in time order."""
        return sorted(self.times.items(), key=lambda mark: mark[1])

    def as_data(self) -> TimelineData:
        """The marks in time order and the notes, as plain data (the ``finished`` event's)."""
        return {"marks": self.marks, "notes": dict(self.notes)}

    def to_json(self) -> str:
        """What the record keeps: ``as_data`` as JSON."""
        return json.dumps(self.as_data())


def parse(text: str | None) -> tuple[list[tuple[str, float]], dict[str, str]]:
    """The marks (in time order) and notes of a record's timeline; none for a run without one."""
    if not text:
        return [], {}
    data = json.loads(text)
    return [(str(name), float(at)) for name, at in data.get("marks", [])], dict(data.get("notes") or {})


def spans(marks: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each mark after the first with the seconds since the mark before it."""
    return [(name, at - marks[i][1]) for i, (name, at) in enumerate(marks[1:])]


class Segment(TypedDict):
    """One phase as the bar draws it."""

    phase: str  # the mark that ends it
    label: str  # "sandbox 1.1 ms (pool)"
    seconds: float
    colour: str


def segments(marks: Sequence[tuple[str, float]], notes: dict[str, str] | None = None) -> list[Segment]:
    """The phases of a timeline as the bar and the line show them."""
    notes = notes or {}
    shown = []
    for name, seconds in spans(marks):
        word, colour = _SHOWN.get(name, (name.replace("_", " "), _OTHER))
        note = f" ({notes[name]})" if name in notes else ""
        shown.append(Segment(phase=name, label=f"{word} {_seconds(seconds)}{note}", seconds=seconds, colour=colour))
    return shown


def breakdown(marks: Sequence[tuple[str, float]], notes: dict[str, str] | None = None) -> str:
    """One line: ``12.3 ms: admit 0.2 ms · sandbox 1.1 ms (pool) · start 0.3 ms · …``; "" without marks."""
    if len(marks) < 2:
        return ""
    return f"{_seconds(marks[-1][1] - marks[0][1])}: " + " · ".join(part["label"] for part in segments(marks, notes))


def _seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of ``values``; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(max(rank, 1), len(ordered)) - 1]
