"""The runs table: every run, from before it starts to after it ends.

A run's row is inserted as ``queued`` before anything is started and finished whatever
happens; rows a dead kernel left unfinished are closed as ``failed`` by ``close_orphans``.
Anyone may ask for a run to be cancelled (``request_cancel``); the kernel running it watches
for that (``cancel_watch``).

A broker's file has the same table (``broker.records``): its rows say whom each run was for
(``user``, ``client_run``) and where it ran (``image``, ``runtime``); a kernel leaves those NULL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypedDict, cast

from jupyter_exec.status import FINAL, Status

from .database import FINAL_SQL, UNFINISHED_SQL, Database

__all__ = ["COLUMNS", "RunRecords", "RunRow", "batch_name", "decoded"]

COLUMNS = (
    "id",
    "name",
    "status",
    "backend",
    "isolation",
    "created",
    "duration",
    "peak_memory",
    "cpu_seconds",
    "exit_code",
    "error",
    "kernel",
    "code_hash",
    "log_path",
)


class RunRow(TypedDict, total=False):
    """A row of the runs table as read: every column (``get``), or those asked for (``runs``).
    Times are epoch seconds; ``spec`` and ``details`` are JSON text (``decoded`` reads them)."""

    id: int
    kernel: str
    owner_pid: int
    name: str | None
    backend: str
    isolation: str | None
    spec: str  # RunSpec.describe()
    code: str  # "" at a broker, which keeps the hash only
    code_hash: str
    status: str
    error: str | None
    exit_code: int | None
    created: float
    started: float | None
    ended: float | None
    duration: float | None
    peak_memory: int | None  # bytes
    cpu_seconds: float | None
    log_path: str | None
    details: str | None  # Outcome.details, and the log's cut
    timeline: str | None  # its marks as JSON (``timeline.parse`` reads them)
    cancel_requested: float | None
    user: str | None  # the rest are a broker's (see the module docstring)
    client_run: int | None
    image: str | None
    runtime: str | None


def batch_name(map_id: int, start: int, end: int) -> str:
    """The name of the run of a map's items ``start`` to ``end``: how the runs list folds a map's
    batches under it (``RunRecords.runs(batches=False)``, ``RunRecords.batches``)."""
    return f"map {map_id}[{start}:{end}]"


def _batches_of(map_id: int | str) -> str:
    """A GLOB pattern matching the names of ``map_id``'s batches (``[0-9]*``: any map's)."""
    return f"map {map_id}[[]*:*]"


def _first_item(batch: RunRow) -> int:
    """Where a batch's items start in its map (``batch_name``)."""
    name = batch.get("name") or "[0:"
    return int(name[name.index("[") + 1 : name.index(":")])


def decoded(row: RunRow) -> dict[str, Any]:
    """``row`` with its spec, details and timeline read from their JSON, to be shown (``%jx show``,
    the side panel)."""
    shown: dict[str, Any] = dict(row)
    for key in ("spec", "details", "timeline"):
        shown[key] = json.loads(shown[key]) if shown.get(key) else None
    return shown


class RunRecords(Database):
    """The runs table (see the module docstring)."""

    def create_run(
        self,
        *,
        kernel: str,
        owner_pid: int,
        name: str | None,
        backend: str,
        isolation: str,
        spec: dict[str, Any],
        code: str,
        code_hash: str,
        user: str | None = None,
        client_run: int | None = None,
        image: str | None = None,
        runtime: str | None = None,
    ) -> int:
        """A new run, ``queued``; its id. The last four are a broker's (see the module docstring)."""
        result = self._execute(
            "INSERT INTO runs (kernel, owner_pid, name, backend, isolation, spec, code, code_hash, status, created,"
            " user, client_run, image, runtime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kernel,
                owner_pid,
                name,
                backend,
                isolation,
                json.dumps(spec),
                code,
                code_hash,
                Status.QUEUED,
                time.time(),
                user,
                client_run,
                image,
                runtime,
            ),
        )
        assert result.lastrowid is not None
        return result.lastrowid

    def mark_running(self, run_id: int, log_path: str | None, started: float | None = None) -> None:
        """A queued run is running (since ``started``, else now); a finished one stays finished."""
        self._execute(
            "UPDATE runs SET status=?, started=?, log_path=? WHERE id=? AND status=?",
            (Status.RUNNING, started or time.time(), log_path, run_id, Status.QUEUED),
        )

    def finish_run(
        self,
        run_id: int,
        status: Status,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        peak_memory: int | None = None,
        cpu_seconds: float | None = None,
        details: dict[str, Any] | None = None,
        started: float | None = None,
        log_path: str | None = None,
        timeline: str | None = None,
    ) -> float | None:
        """Finish an unfinished run in one statement: its end, its ``timeline``, and its ``started``
        time and ``log_path`` where the row has none yet (a short run is never marked running on
        its own). The run's duration if this call finished it; None if it was finished already."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status}")
        now = time.time()
        row = self._execute(
            "UPDATE runs SET status=?, error=?, exit_code=?, peak_memory=?, cpu_seconds=?, ended=?,"
            " started=COALESCE(started, ?), duration=? - COALESCE(started, ?, created), details=?,"
            " log_path=COALESCE(log_path, ?), timeline=COALESCE(?, timeline)"
            f" WHERE id=? AND status NOT IN ({FINAL_SQL}) RETURNING duration",
            (
                status,
                error,
                exit_code,
                peak_memory,
                cpu_seconds,
                now,
                started,
                now,
                started,
                json.dumps(details or {}),
                log_path,
                timeline,
                run_id,
            ),
        ).fetchone()
        return None if row is None else float(row["duration"])

    def get(self, run_id: int) -> RunRow | None:
        row = self._execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return _row(row) if row else None

    def runs(
        self,
        limit: int = 50,
        *,
        statuses: Collection[str] = (),
        columns: Collection[str] = COLUMNS,
        user: str | None = None,
        batches: bool = True,
    ) -> list[RunRow]:
        """The newest ``limit`` runs, newest first; only those in ``statuses`` if any are given,
        only ``user``'s if given (a broker's file), and without maps' batches unless ``batches``."""
        where = [f"status IN ({', '.join('?' * len(statuses))})"] if statuses else []
        args: list[Any] = list(statuses)
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if not batches:
            where.append("(name IS NULL OR name NOT GLOB ?)")
            args.append(_batches_of("[0-9]*"))
        sql = f"SELECT {', '.join(columns)} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_row(r) for r in self._execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()]

    def batches(self, map_ids: Collection[int], columns: Collection[str] = COLUMNS) -> dict[int, list[RunRow]]:
        """The batches (the runs that ran its items) of each map of ``map_ids`` that has any, in the
        order of their items."""
        if not map_ids:
            return {}
        sql = f"SELECT {', '.join({'name', *columns})} FROM runs WHERE id > ? AND name GLOB ? ORDER BY id"
        found: dict[int, list[RunRow]] = {}
        for row in self._execute(sql, (min(map_ids), _batches_of("[0-9]*"))).fetchall():
            map_id = int(row["name"][len("map ") : row["name"].index("[")])
            if map_id in map_ids:
                found.setdefault(map_id, []).append(_row(row))
        for batches in found.values():
            batches.sort(key=_first_item)
        return found

    def timelines(self, limit: int) -> list[RunRow]:
        """The backend and timeline of the newest ``limit`` finished runs that have one, newest first."""
        sql = f"SELECT backend, timeline FROM runs WHERE timeline IS NOT NULL AND status IN ({FINAL_SQL})"
        return [_row(r) for r in self._execute(f"{sql} ORDER BY id DESC LIMIT ?", (limit,)).fetchall()]

    def request_cancel(self, run_id: int) -> RunRow | None:
        """Ask for an unfinished run to be cancelled, whichever kernel runs it (its ``Manager``
        watches for this); the row as it is now, or None if there is no such run."""
        self._execute(
            "UPDATE runs SET cancel_requested=? WHERE id=? AND cancel_requested IS NULL"
            f" AND status IN ({UNFINISHED_SQL})",
            (time.time(), run_id),
        )
        return self.get(run_id)

    def cancel_requests(self, run_ids: Collection[int]) -> list[int]:
        """Which of ``run_ids`` someone asked to cancel (primary-key lookups: cheap to poll)."""
        rows = self._execute(
            f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(run_ids))}) AND cancel_requested IS NOT NULL",
            tuple(run_ids),
        )
        return [r["id"] for r in rows.fetchall()]

    def unfinished(self) -> Iterator[RunRow]:
        rows = self._execute(f"SELECT id, owner_pid FROM runs WHERE status IN ({UNFINISHED_SQL})").fetchall()
        return (_row(r) for r in rows)

    def close_orphans(self, is_alive: Callable[[int], bool]) -> int:
        """Finish runs whose kernel died mid-run. ``is_alive(pid)`` says if an owner lives."""
        return len(self.fail_orphans(is_alive, "the kernel running it exited before it finished"))

    def fail_orphans(self, is_alive: Callable[[int], bool], error: str) -> list[RunRow]:
        """Finish as ``failed`` (``error``) the unfinished runs whose owner is not alive; their rows."""
        orphans = [row["id"] for row in self.unfinished() if not is_alive(row["owner_pid"])]
        finished = [
            self.get(run_id) for run_id in orphans if self.finish_run(run_id, Status.FAILED, error=error) is not None
        ]
        return [row for row in finished if row is not None]


def _row(row: sqlite3.Row) -> RunRow:
    return cast(RunRow, dict(row))
