"""What the side panel reads and asks for, as plain data, from the store file the kernels write.

The server opens the store only once a kernel has made it (until then every list is empty),
and writes nothing but cancel requests and the end of runs whose kernel died (``failed``, as a
kernel starting would finish them): a killed kernel's runs never show as running. Failures the
client can act on are ``ApiError`` with the HTTP status to answer and a one-line message.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from jupyter_exec._proc import pid_alive
from jupyter_exec.cancel_watch import ask_cancel
from jupyter_exec.envs.cache import EnvIndex
from jupyter_exec.errors import ApiError, StoreError
from jupyter_exec.reports import run_name
from jupyter_exec.stats import phase_stats
from jupyter_exec.status import FINAL, Status
from jupyter_exec.store.connections import RunConnections
from jupyter_exec.store.records import RunRecords, RunRow, decoded
from jupyter_exec.timeline import breakdown, parse, segments
from jupyter_exec.trace.tables import TraceTables

from .logs import read_piece

__all__ = ["API_PREFIX", "STATUSES", "PanelQueries"]

P = ParamSpec("P")
R = TypeVar("R")

API_PREFIX = "jupyter-exec/api/v1"  # under the server's base URL
STATUSES = tuple(status.value for status in Status)

#: What the runs list shows of each run (the detail has every column).
_LISTED = (
    "id",
    "name",
    "status",
    "backend",
    "isolation",
    "kernel",
    "created",
    "started",
    "ended",
    "duration",
    "peak_memory",
    "cpu_seconds",
    "exit_code",
    "error",
    "cancel_requested",
)


def _answerable(method: Callable[P, R]) -> Callable[P, R]:
    """``method`` with the store's own failures (locked, damaged, unreadable: ``StoreError``,
    one line naming the file and the fix) answered as 503."""

    @functools.wraps(method)
    def answer(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StoreError as error:
            raise ApiError(503, str(error)) from error

    return answer


class PanelQueries:
    """The runs, logs, envs and traces in the store at ``path`` (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._tables: tuple[RunRecords, EnvIndex, TraceTables, RunConnections] | None = None

    def _open(self) -> tuple[RunRecords, EnvIndex, TraceTables, RunConnections] | None:
        """The store's tables, opened on first use after a kernel has made the file; None before."""
        with self._lock:
            if self._tables is None and self.path.exists():
                self._tables = (
                    RunRecords(self.path),
                    EnvIndex(self.path),
                    TraceTables(self.path),
                    RunConnections(self.path),
                )
            return self._tables

    def _records(self) -> RunRecords | None:
        """The runs table, the runs of kernels that died finished first."""
        tables = self._open()
        if tables is None:
            return None
        tables[0].close_orphans(pid_alive)
        return tables[0]

    @_answerable
    def runs(self, statuses: Collection[str], limit: int) -> dict[str, Any]:
        """The newest ``limit`` runs (of ``statuses`` if any), newest first, a map as one row (its
        batches counted in ``batches``); ``label`` tells each apart (``run_name``); ``now`` is the
        server's clock."""
        records = self._records()
        rows = records.runs(limit, statuses=statuses, columns=(*_LISTED, "code"), batches=False) if records else []
        batches = records.batches({row["id"] for row in rows}, columns=("id",)) if records else {}
        listed: list[dict[str, Any]] = []
        for row in rows:
            count = len(batches.get(row["id"], []))
            shown = {**row, "label": run_name(row, count), "batches": count, "error": _first_line(row["error"])}
            del shown["code"]  # read for the label only
            listed.append(shown)
        return {"runs": listed, "now": time.time()}

    @_answerable
    def run(self, run_id: int) -> dict[str, Any]:
        """Every recorded field of one run, its spec, details and timeline decoded (the timeline's
        one-line breakdown in ``timeline_line``, its phases as the bar draws them in
        ``timeline_phases``); a map's batches (id, name, status, duration) in ``batches``; a
        host-list run's connections in ``connections``."""
        stored = self._row(run_id)
        row, marks = decoded(stored), parse(stored.get("timeline"))
        tables = self._open()
        found = tables[0].batches({run_id}, columns=("id", "status", "duration")) if tables else {}
        connections = tables[3].of(run_id) if tables else []
        return {
            **row,
            "timeline_line": breakdown(*marks),
            "timeline_phases": segments(*marks),
            "batches": found.get(run_id, []),
            **({"connections": connections} if connections else {}),
            "now": time.time(),
        }

    @_answerable
    def log(self, run_id: int, offset: int, max_bytes: int, tail: bool = False) -> dict[str, Any]:
        """A piece of the run's log from ``offset`` (``tail``: its end); ``done`` once the run is
        over and all of it was read."""
        row = self._row(run_id)
        finished = row["status"] in FINAL
        piece = read_piece(row["log_path"], offset, max_bytes, finished=finished, tail=tail)
        return {
            "run_id": run_id,
            "status": row["status"],
            **piece,
            "done": finished and piece["next_offset"] >= piece["size"],
        }

    @_answerable
    def cancel(self, run_id: int) -> dict[str, Any]:
        """Ask the kernel running it to cancel the run (409 if it had already finished)."""
        records = self._records()
        row = ask_cancel(records, run_id) if records else None
        if row is None:
            raise _no_run(run_id)
        if row["cancel_requested"] is None:
            raise ApiError(409, f"run {run_id} already finished ({row['status']}); nothing to cancel")
        return {"run_id": run_id, "status": row["status"], "cancel_requested": row["cancel_requested"]}

    @_answerable
    def stats(self, limit: int) -> dict[str, Any]:
        """p50/p90/p99 of each phase of the newest ``limit`` runs' timelines, per backend, in seconds."""
        records = self._records()
        return phase_stats(records, limit) if records else {"runs": 0, "backends": {}}

    @_answerable
    def envs(self) -> dict[str, Any]:
        """The runtime-env cache index, most recently used first."""
        tables = self._open()
        rows = tables[1].all() if tables else []
        for row in rows:
            row["spec"] = json.loads(row["spec"])
        return {"envs": rows}

    @_answerable
    def traces(self) -> dict[str, Any]:
        """Every experiment trace with its node counts, the most recently grown first."""
        tables = self._open()
        return {"traces": tables[2].summaries() if tables else []}

    @_answerable
    def trace(self, name: str) -> dict[str, Any]:
        """One trace's nodes in id order (parents before children), and its SOTA."""
        tables = self._open()
        trace = tables[2].read(name) if tables else None
        if trace is None:
            raise ApiError(404, f"no trace {name!r}; GET /{API_PREFIX}/traces lists them")
        best = trace.sota()
        nodes = [
            {
                "id": n.id,
                "parent": n.parent,
                "status": n.status,
                "depth": n.depth,
                "accepted": n.accepted,
                "metrics": n.metrics,
                "params": n.params,
                "run_id": n.run_id,
                "error": _first_line(n.error),
                "created": n.created,
                "ended": n.ended,
            }
            for n in (trace.nodes[i] for i in sorted(trace.nodes))
        ]
        return {
            "name": trace.name,
            "metric": trace.metric,
            "maximize": trace.maximize,
            "sota": best.id if best else None,
            "nodes": nodes,
        }

    def _row(self, run_id: int) -> RunRow:
        records = self._records()
        row = records.get(run_id) if records else None
        if row is None:
            raise _no_run(run_id)
        return row


def _no_run(run_id: int) -> ApiError:
    return ApiError(404, f"no run {run_id}; GET /{API_PREFIX}/runs lists them")


def _first_line(text: str | None, width: int = 200) -> str | None:
    return text.splitlines()[0][:width] if text else text
