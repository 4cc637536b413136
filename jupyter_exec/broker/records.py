"""The broker's own record of every run it took: an SQLite file in its data directory.

A run is recorded (``queued``) before it waits or starts and finished whatever happens, like
a kernel's store, but with the user it ran for: ``runs``, ``show``, ``logs`` and ``cancel``
answer a user about their own runs only, and the admin CLI about anyone's. A broker that
died (``kill -9``, a crash, the machine's power) left runs ``queued`` or ``running``; the
next one finishes them as ``failed`` with the reason "broker restarted" before it serves
(their containers died with the broker: each is bound to its life, see ``container.slot``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_exec.backends.base import Outcome
from jupyter_exec.status import FINAL, UNFINISHED, Status

__all__ = ["RESTARTED", "Records"]

RESTARTED = "broker restarted: the run was stopped when the broker that ran it ended"
_FINAL = ", ".join(f"'{s}'" for s in sorted(FINAL))
_UNFINISHED = ", ".join(f"'{s}'" for s in sorted(UNFINISHED))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    kernel TEXT,
    client_run INTEGER,
    name TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    duration REAL,
    error TEXT,
    image TEXT,
    runtime TEXT,
    limits TEXT,
    code_hash TEXT,
    exit_code INTEGER,
    peak_memory INTEGER,
    details TEXT
);
CREATE INDEX IF NOT EXISTS runs_user ON runs (user, id);
"""
LISTED = ("id", "user", "status", "name", "created", "duration", "peak_memory", "image", "runtime", "error", "kernel")


class Records:
    """The runs table (see the module docstring). Thread-safe: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def create(
        self,
        *,
        user: str,
        kernel: str,
        client_run: int | None,
        name: str | None,
        image: str,
        runtime: str | None,
        limits: dict[str, Any],
        code_hash: str,
    ) -> int:
        cursor = self._execute(
            "INSERT INTO runs (user, kernel, client_run, name, status, created, image, runtime, limits, code_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, kernel, client_run, name, Status.QUEUED, time.time(), image, runtime, json.dumps(limits), code_hash),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def mark_running(self, run_id: int, image: str) -> None:
        self._execute(
            "UPDATE runs SET status=?, started=?, image=? WHERE id=?", (Status.RUNNING, time.time(), image, run_id)
        )

    def finish(
        self, run_id: int, status: Status, error: str | None, outcome: Outcome | None = None
    ) -> dict[str, Any] | None:
        """Finish an unfinished run (its exit code, peak memory and details from ``outcome``); the row as it is
        now (None if it was finished already)."""
        exit_code, peak_memory = (outcome.exit_code, outcome.peak_memory) if outcome else (None, None)
        details = outcome.details if outcome else {}
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "UPDATE runs SET status=?, error=?, exit_code=?, peak_memory=?, ended=?,"
                f" duration=? - COALESCE(started, created), details=? WHERE id=? AND status NOT IN ({_FINAL})"
                " RETURNING *",
                (status, error, exit_code, peak_memory, now, now, json.dumps(details), run_id),
            ).fetchone()
        return dict(row) if row else None

    def get(self, run_id: int) -> dict[str, Any] | None:
        row = self._execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(row) if row else None

    def runs(self, user: str | None, *, finished: bool, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs of ``user`` (None: everyone's); only unfinished ones unless ``finished``."""
        where = [] if finished else [f"status IN ({_UNFINISHED})"]
        args: list[Any] = []
        if user is not None:
            where.append("user=?")
            args.append(user)
        sql = f"SELECT {', '.join(LISTED)} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        return [dict(r) for r in self._execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()]

    def recover(self) -> list[dict[str, Any]]:
        """Finish every run a dead broker left unfinished as ``failed`` ("broker restarted"); those rows."""
        unfinished = self._execute(f"SELECT id FROM runs WHERE status IN ({_UNFINISHED})").fetchall()
        finished = [self.finish(row["id"], Status.FAILED, RESTARTED) for row in unfinished]
        return [row for row in finished if row is not None]

    def close(self) -> None:
        with self._lock:
            self._db.close()
