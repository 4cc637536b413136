"""``TraceTables``: traces in the store file, in tables of their own.

``trace_meta`` names each trace with its metric and direction; ``trace_nodes`` holds
one row per node, written when the node starts and finished whatever happens. A trace
is loaded back (after a kernel restart, say) by replaying its rows into a ``Trace``;
nodes a dead kernel left running are closed as ``failed`` first.

A process keeps one live ``Trace`` per name (``open`` returns it), so every writer in it
— cells with ``--trace``, in front or in the background, a map, ``explore`` — grows the
same tree: a node's row and its place in the model change together under the trace's
lock. ``open`` also catches up with what other processes wrote since (and closes what
those that died left running).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, TypedDict, cast

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import SpecError
from jupyter_exec.status import Status
from jupyter_exec.store.database import UNFINISHED_SQL, Database

from .model import Node, Trace

__all__ = ["TraceSummary", "TraceTables"]


class TraceSummary(TypedDict):
    """One trace in a few figures (``summaries``; the side panel's list of traces)."""

    name: str
    metric: str
    maximize: bool
    created: float  # epoch seconds
    nodes: int
    running: int  # nodes not finished
    updated: float  # its newest node's start, or its creation


class TraceTables(Database):
    """Thread-safe reads and writes of traces; every change goes to the DB and the model."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._live: dict[str, Trace] = {}
        self._opening = threading.Lock()

    def names(self) -> list[str]:
        """Trace names, the most recently grown first."""
        return [s["name"] for s in self.summaries()]

    def summaries(self) -> list[TraceSummary]:
        """Each trace's name, metric, direction, node counts and last growth, the most recently grown first."""
        rows = self._execute(
            "SELECT m.name, m.metric, m.maximize, m.created, COUNT(n.id) AS nodes,"
            " COALESCE(SUM(n.ended IS NULL), 0) AS running, MAX(COALESCE(n.created, m.created)) AS updated"
            " FROM trace_meta m LEFT JOIN trace_nodes n ON n.trace = m.name"
            " GROUP BY m.name ORDER BY updated DESC"
        ).fetchall()
        return [cast(TraceSummary, {**dict(r), "maximize": bool(r["maximize"])}) for r in rows]

    def open(self, name: str, metric: str | None = None, maximize: bool | None = None) -> Trace:
        """Load trace ``name``, creating it if new (default metric ``score``, maximised).

        A stored trace keeps its metric and direction: asking for others is an error.
        """
        if not name:
            raise SpecError("a trace needs a name, e.g. trace='tuning'")
        with self._opening:
            trace = self._live.get(name)
            if trace is None:
                trace = self._live[name] = self._open(name, metric, maximize)
            else:
                self._check(name, (trace.metric, trace.maximize), metric, maximize)
                self._close_orphans(name)
                self._catch_up(trace)
            return trace

    def _open(self, name: str, metric: str | None, maximize: bool | None) -> Trace:
        stored = self._meta(name)
        if stored is None:
            metric, maximize = metric or "score", True if maximize is None else maximize
            self._execute(
                "INSERT INTO trace_meta (name, metric, maximize, created) VALUES (?, ?, ?, ?)",
                (name, metric, int(maximize), time.time()),
            )
            return Trace(name, metric, maximize)
        self._check(name, stored, metric, maximize)
        return self._load(name, *stored)

    @staticmethod
    def _check(name: str, stored: tuple[str, bool], metric: str | None, maximize: bool | None) -> None:
        """A stored trace keeps its metric and direction: asking for others is an error."""
        if (metric or stored[0], stored[1] if maximize is None else maximize) != stored:
            raise SpecError(
                f"trace {name!r} records {stored[0]} "
                f"({'maximised' if stored[1] else 'minimised'}); use another trace name for "
                f"{metric} ({'maximised' if maximize else 'minimised'})"
            )

    def _catch_up(self, trace: Trace) -> None:
        """Add the nodes other processes added since, and their finishes, in their order."""
        with trace.lock:
            rows = [
                dict(r)
                for r in self._execute(
                    "SELECT * FROM trace_nodes WHERE trace=? AND (id > ? OR ended > ?) ORDER BY id",
                    (trace.name, max(trace.nodes, default=0), trace.last_ended),
                )
            ]
            self._apply(trace, [r for r in rows if r["id"] not in trace.nodes], rows)

    def read(self, name: str) -> Trace | None:
        """Trace ``name`` as stored, or None; nothing is written (for readers such as the side panel)."""
        stored = self._meta(name)
        return None if stored is None else self._replay(name, *stored)

    def _meta(self, name: str) -> tuple[str, bool] | None:
        """The stored (metric, maximize) of trace ``name``, or None."""
        row = self._execute("SELECT metric, maximize FROM trace_meta WHERE name=?", (name,)).fetchone()
        return None if row is None else (row["metric"], bool(row["maximize"]))

    def _load(self, name: str, metric: str, maximize: bool) -> Trace:
        self._close_orphans(name)
        return self._replay(name, metric, maximize)

    def _replay(self, name: str, metric: str, maximize: bool) -> Trace:
        trace = Trace(name, metric, maximize)
        rows = [dict(r) for r in self._execute("SELECT * FROM trace_nodes WHERE trace=? ORDER BY id", (name,))]
        self._apply(trace, rows, rows)
        return trace

    @staticmethod
    def _apply(trace: Trace, added: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
        """Add the ``added`` rows as running nodes (in id order), then finish those of ``rows``
        that ended and are not finished in ``trace`` yet, in the order they ended."""
        for row in added:
            trace.add(
                Node(
                    id=row["id"],
                    parent=row["parent"],
                    code=row["code"],
                    params=json.loads(row["params"]),
                    spec=json.loads(row["spec"]),
                    run_id=row["run_id"],
                    created=row["created"],
                    owner_pid=row["owner_pid"],
                )
            )
        ended = [r for r in rows if r["ended"] is not None and not trace.nodes[r["id"]].finished]
        for row in sorted(ended, key=lambda r: (r["ended"], r["id"])):
            trace.finish(
                row["id"],
                row["status"],
                json.loads(row["metrics"]),
                error=row["error"],
                run_id=row["run_id"],
                ended=row["ended"],
            )

    def _close_orphans(self, name: str) -> None:
        rows = self._execute(
            "SELECT id, owner_pid FROM trace_nodes WHERE trace=? AND ended IS NULL", (name,)
        ).fetchall()
        for row in rows:
            if row["owner_pid"] != os.getpid() and not pid_alive(row["owner_pid"]):
                self._execute(
                    "UPDATE trace_nodes SET status=?, ended=?, error=? WHERE id=?",
                    (Status.FAILED, time.time(), "the kernel running it exited before it finished", row["id"]),
                )

    def add(
        self,
        trace: Trace,
        parent: int | None,
        code: str,
        *,
        params: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
    ) -> Node:
        """A new running node under ``parent`` (None: a new root), stored before it runs."""
        if parent is not None and parent not in trace.nodes:
            raise SpecError(f"trace {trace.name!r} has no node {parent}; `%jx tree {trace.name}` shows it")
        params, spec, created = dict(params or {}), dict(spec or {}), time.time()
        with trace.lock:  # the row and the model together: ids and the model's order agree
            cursor = self._execute(
                "INSERT INTO trace_nodes (trace, parent, status, code, params, spec, owner_pid, created)"
                f" VALUES (?, ?, '{Status.RUNNING}', ?, ?, ?, ?, ?)",
                (
                    trace.name,
                    parent,
                    code,
                    json.dumps(params, default=str),
                    json.dumps(spec, default=str),
                    os.getpid(),
                    created,
                ),
            )
            assert cursor.lastrowid is not None
            return trace.add(
                Node(
                    id=cursor.lastrowid,
                    parent=parent,
                    code=code,
                    params=params,
                    spec=spec,
                    created=created,
                    owner_pid=os.getpid(),
                )
            )

    def finish(
        self,
        trace: Trace,
        node: Node,
        status: Status,
        metrics: dict[str, float] | None = None,
        *,
        error: str | None = None,
        run_id: int | None = None,
    ) -> Node:
        """Record a node's outcome in the DB and the model."""
        with trace.lock:
            trace.finish(node.id, status, metrics, error=error, run_id=run_id)
            self._execute(
                "UPDATE trace_nodes SET status=?, metrics=?, error=?, run_id=?, ended=? WHERE id=?",
                (node.status, json.dumps(node.metrics), node.error, node.run_id, node.ended, node.id),
            )
        return node

    def active_runs(self, names: list[str]) -> list[int]:
        """Ids of unfinished runs (in the runs table) with these names: what to cancel."""
        if not names:
            return []
        rows = self._execute(
            f"SELECT id FROM runs WHERE status IN ({UNFINISHED_SQL}) AND name IN ({', '.join('?' * len(names))})",
            tuple(names),
        ).fetchall()
        return [r["id"] for r in rows]
