"""``Database``: one connection to the store file, which each table's class subclasses, and
the SQL their queries share."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_exec.status import FINAL, UNFINISHED

from .opening import connect, may_be_full, raise_for
from .space import Reserve

__all__ = ["FINAL_SQL", "UNFINISHED_SQL", "Database"]

FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(FINAL))  # for "status IN (...)"
UNFINISHED_SQL = ", ".join(f"'{status}'" for status in sorted(UNFINISHED))


class Database:
    """One thread-safe connection to the store's file; the runs, the cache's entries, the traces
    and the env index each subclass it. The file's schema is ``schema``'s migrations, applied on
    opening.

    A write that finds the disk full gives back the ballast beside the store (``Reserve``) and
    tries once more, so a run's row is finished even on a disk its output filled; any other
    failure of the file is a one-line ``StoreError``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self.reserve = Reserve(self.path)

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> _Result:
        with self._lock:
            try:
                return self._run(sql, args)
            except sqlite3.Error as error:
                if not (may_be_full(error) and self.reserve.release()):
                    raise_for(self.path, error)
            try:
                return self._run(sql, args)
            except sqlite3.Error as error:
                raise_for(self.path, error)

    def _run(self, sql: str, args: tuple[Any, ...]) -> _Result:
        cursor = self._db.execute(sql, args)
        return _Result(cursor.fetchall(), cursor.lastrowid, cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Result:
    """A statement's rows, read whole while the lock is held (so a damaged page fails inside
    ``_execute``, as a ``StoreError``), with the cursor's ``lastrowid`` and ``rowcount``."""

    def __init__(self, rows: list[sqlite3.Row], lastrowid: int | None, rowcount: int) -> None:
        self._rows, self.lastrowid, self.rowcount = rows, lastrowid, rowcount

    def fetchone(self) -> sqlite3.Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[sqlite3.Row]:
        return self._rows

    def __iter__(self) -> Iterator[sqlite3.Row]:
        return iter(self._rows)
