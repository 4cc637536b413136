"""Where recent runs spent their time: percentiles of each phase of their timelines, per backend.

A phase is named by the mark that ends it (``sandbox_ready``: from the mark before it until the
sandbox was ready); besides the phases, ``first_output`` from ``queued`` (create to first output)
and ``total`` (first mark to last). ``%jx stats`` shows this table; the side panel's server
answers it as JSON (``/api/jupyter-exec/v1/stats``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .reports import text_table
from .store.records import RunRecords
from .timeline import PHASES, parse, percentile, spans

__all__ = ["QUANTILES", "phase_stats", "stats_text"]

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_TOTALS = ("create_to_first_output", "total")


def phase_stats(records: RunRecords, limit: int = 1000) -> dict[str, Any]:
    """``{"runs": N, "backends": {backend: {"runs": n, "phases": {phase: {"p50": s, ...}}}}}``
    over the newest ``limit`` finished runs; seconds, phases in the order runs go through them."""
    seconds: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    offsets: dict[str, list[float]] = defaultdict(list)  # each mark's time after queued: the phases' order
    counts: dict[str, int] = defaultdict(int)
    rows = records.timelines(limit)
    for row in rows:
        marks, _ = parse(row["timeline"])
        if len(marks) < 2:
            continue
        backend = seconds[row["backend"]]
        counts[row["backend"]] += 1
        for name, span in spans(marks):
            backend[name].append(span)
        for name, at in marks:
            offsets[name].append(at - marks[0][1])
        first = dict(marks).get("first_output")
        if first is not None:
            backend["create_to_first_output"].append(first - marks[0][1])
        backend["total"].append(marks[-1][1] - marks[0][1])
    return {
        "runs": len(rows),
        "backends": {
            name: {
                "runs": counts[name],
                "phases": {
                    phase: {key: percentile(values, q) for key, q in QUANTILES.items()} | {"count": len(values)}
                    for phase, values in sorted(phases.items(), key=lambda item: _order(item[0], offsets))
                },
            }
            for name, phases in sorted(seconds.items())
        },
    }


def _order(phase: str, offsets: dict[str, list[float]]) -> tuple[float, int]:
    """Phases in the order runs reach them (their mean time after ``queued``; ``PHASES`` order
    between equals), the sums last."""
    if phase in _TOTALS:
        return (float("inf"), _TOTALS.index(phase))
    times = offsets.get(phase) or [0.0]
    return (sum(times) / len(times), PHASES.index(phase) if phase in PHASES else len(PHASES))


def stats_text(stats: dict[str, Any]) -> str:
    """``phase_stats`` as an aligned table, one row per backend and phase, in milliseconds."""
    if not stats["backends"]:
        return "no finished runs with a timeline yet"
    rows = [
        (backend, entry["runs"], phase, *(_ms(figures[key]) for key in QUANTILES))
        for backend, entry in stats["backends"].items()
        for phase, figures in entry["phases"].items()
    ]
    header = ("backend", "runs", "phase", *(f"{key} ms" for key in QUANTILES))
    return f"the newest {stats['runs']} runs with a timeline\n" + text_table(header, rows)


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"
