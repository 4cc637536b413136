"""``map(..., trace=NAME)``: every item of a map a node of the trace.

The nodes are added, running, under one parent (chosen as ``--parent`` chooses, when the
map starts) before any item runs, with the item as their ``item`` param; each is
finished as its item's result or error comes in, from the map's own thread, while cells
in the background may grow the same trace (the trace tables' live ``Trace`` takes both). Items
that never finished (an interrupt, a map that failed as a whole) are closed with the
map's error, so no node stays running.
"""

from __future__ import annotations

from typing import Any

from jupyter_exec.errors import describe_error, status_of
from jupyter_exec.manager import Manager

from .explore import record_outcome, record_value, resolve_parent, trace_tables

__all__ = ["SweepNodes"]


class SweepNodes:
    """The nodes of one map's items in trace ``name`` (see the module docstring)."""

    def __init__(
        self,
        manager: Manager,
        name: str,
        code: str,
        items: list[Any],
        *,
        parent: str | int | None = "latest",
        metric: str | None = None,
        maximize: bool | None = None,
    ) -> None:
        self.tables = trace_tables(manager)
        self.trace = self.tables.open(name, metric, maximize)
        with self.trace.lock:
            under = resolve_parent(self.trace, parent)
            self.nodes = [self.tables.add(self.trace, under, code, params={"item": item}) for item in items]

    def settled(self, index: int, result: Any, error: BaseException | None) -> None:
        """Item ``index`` came in: its node finished with its metrics, or its error."""
        node = self.nodes[index]
        if error is not None:
            record_outcome(self.tables, self.trace, node, None, error)
        else:
            record_value(self.tables, self.trace, node, result, {}, None)

    def abandon(self, error: BaseException) -> None:
        """Close the nodes still running with the error that stopped the map."""
        with self.trace.lock:
            for node in self.nodes:
                if not node.finished:
                    self.tables.finish(self.trace, node, status_of(error), error=describe_error(error))
