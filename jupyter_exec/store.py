"""The embedded SQLite store: every run, from before it starts to after it ends.

One file (WAL mode, so a side panel or another kernel can read while a kernel writes)
in the user's data directory. A run's row is inserted as ``queued`` before anything is
started and finished whatever happens; rows a dead kernel left unfinished are closed
as ``failed`` by ``close_orphans``. Anyone may ask for a run to be cancelled
(``request_cancel``); the kernel running it watches for that (``cancel_watch``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from .status import FINAL, UNFINISHED, Status

__all__ = ["FINAL_SQL", "UNFINISHED_SQL", "Database", "Store"]

FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(FINAL))  # for "status IN (...)"
UNFINISHED_SQL = ", ".join(f"'{status}'" for status in sorted(UNFINISHED))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kernel      TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    name        TEXT,
    backend     TEXT NOT NULL,
    isolation   TEXT,
    spec        TEXT NOT NULL,
    code        TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    exit_code   INTEGER,
    created     REAL NOT NULL,
    started     REAL,
    ended       REAL,
    duration    REAL,
    peak_memory INTEGER,
    cpu_seconds REAL,
    log_path    TEXT,
    details     TEXT
    -- columns added later are in Store.ADDED_COLUMNS
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""

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


class Database:
    """One thread-safe connection to the store's file; each part (runs, traces, envs)
    subclasses it with its own ``SCHEMA`` of tables."""

    SCHEMA = ""
    #: Columns added after a table first shipped, as (table, column, declaration): a store
    #: file made before them gets them on opening, so old files keep working.
    ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync per write
            self._db.executescript(self.SCHEMA)
            self._add_columns()

    def _add_columns(self) -> None:
        for table, column, declaration in self.ADDED_COLUMNS:
            if column in {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                continue
            try:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            except sqlite3.OperationalError as error:  # another process added it first
                if "duplicate column" not in str(error):
                    raise

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Store(Database):
    """The runs table."""

    SCHEMA = _SCHEMA
    ADDED_COLUMNS = (("runs", "cancel_requested", "REAL"),)  # when someone asked (epoch seconds)

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
    ) -> int:
        cursor = self._execute(
            "INSERT INTO runs (kernel, owner_pid, name, backend, isolation, spec, code, code_hash, status, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def mark_running(self, run_id: int, log_path: str | None) -> None:
        self._execute(
            "UPDATE runs SET status=?, started=?, log_path=? WHERE id=?",
            (Status.RUNNING, time.time(), log_path, run_id),
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
    ) -> None:
        if status not in FINAL:
            raise ValueError(f"not a final status: {status}")
        now = time.time()
        self._execute(
            "UPDATE runs SET status=?, error=?, exit_code=?, peak_memory=?, cpu_seconds=?, ended=?,"
            f" duration=? - COALESCE(started, created), details=? WHERE id=? AND status NOT IN ({FINAL_SQL})",
            (status, error, exit_code, peak_memory, cpu_seconds, now, now, json.dumps(details or {}), run_id),
        )

    def get(self, run_id: int) -> dict[str, Any] | None:
        row = self._execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(
        self, limit: int = 50, *, statuses: Collection[str] = (), columns: Collection[str] = COLUMNS
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, newest first; only those in ``statuses`` if any are given."""
        where = f" WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        rows = self._execute(
            f"SELECT {', '.join(columns)} FROM runs{where} ORDER BY id DESC LIMIT ?", (*statuses, limit)
        )
        return [dict(r) for r in rows.fetchall()]

    def request_cancel(self, run_id: int) -> dict[str, Any] | None:
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

    def unfinished(self) -> Iterator[dict[str, Any]]:
        rows = self._execute(f"SELECT id, owner_pid FROM runs WHERE status IN ({UNFINISHED_SQL})").fetchall()
        return (dict(r) for r in rows)

    def close_orphans(self, is_alive: Callable[[int], bool]) -> int:
        """Finish runs whose kernel died mid-run. ``is_alive(pid)`` says if an owner lives."""
        closed = 0
        for row in self.unfinished():
            if not is_alive(row["owner_pid"]):
                self.finish_run(row["id"], Status.FAILED, error="the kernel running it exited before it finished")
                closed += 1
        return closed
