"""Opening the store file: the journal mode its filesystem allows, the schema brought up to date,
and a damaged file moved aside instead of a dead extension.

A file SQLite cannot read (a garbage header after a crash on a bad disk, a half-copied home
directory) is renamed ``runs.sqlite3.corrupt-<time>`` with its journal files, a new store is
started in its place, and one warning line names both files and the commands that salvage
the old one. Run ids of the new store continue above those the old one held, so no new run
takes an old run's log. Every other failure is a one-line ``StoreError`` naming the file and
the fix (``describe``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from jupyter_exec.errors import StoreError
from jupyter_exec.status import UNFINISHED

from .filesystems import journal_mode
from .pages import JOURNAL_SUFFIXES
from .salvage import highest_ids
from .schema import migrate
from .space import free_bytes, no_room

__all__ = [
    "BUSY_TIMEOUT",
    "connect",
    "damaged",
    "describe",
    "may_be_full",
    "raise_for",
    "sqlite_code",
]

#: Seconds a statement waits for another process's lock before "locked" is the answer.
BUSY_TIMEOUT = 30.0

# Primary result codes (https://sqlite.org/rescode.html); sqlite3 exposes them from Python 3.11 only.
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _AUTH, _NOTADB = 13, 14, 23, 26
_BY_MESSAGE = {
    "file is not a database": _NOTADB,
    "database disk image is malformed": _CORRUPT,
    "database or disk is full": _FULL,
    "database is locked": _BUSY,
    "unable to open database file": _CANTOPEN,
    "attempt to write a readonly database": _READONLY,
    "disk I/O error": _IOERR,
}


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the store at ``path`` (autocommit, usable from any thread) in the journal
    mode its filesystem allows, its schema up to date."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unusable(path.parent, error) from error
    journal = journal_mode(path)
    opened = _open_unless_damaged(path, journal)
    if isinstance(opened, sqlite3.Connection):
        return opened
    try:
        with _exclusive(path):  # one process moves it aside; the others find the new store
            again = _open_unless_damaged(path, journal)
            if isinstance(again, sqlite3.Connection):
                return again
            moved = _move_aside(path)
            try:
                db = _open(path, journal)
                _continue_ids(db, moved, path.parent / "logs")
            except sqlite3.Error as error:
                raise_for(path, error)
    except OSError as error:  # a read-only directory or filesystem: it cannot be moved aside
        raise StoreError(
            f"the run store {path} is damaged ({opened}) and cannot be moved aside ({error}); move it "
            "away by hand (`jupyter-exec store recover FILE` salvages it later), or set JX_DATA_DIR to "
            "another directory",
            path,
        ) from error
    print(
        f"jupyter-exec: the run store {path} was damaged ({opened}); it was moved to {moved} and a new "
        f"store started. `jupyter-exec store check {moved}` shows what is left in it, "
        f"`jupyter-exec store recover {moved}` copies its runs into the new store.",
        file=sys.stderr,
        flush=True,
    )
    return db


def _open_unless_damaged(path: Path, journal: str) -> sqlite3.Connection | str:
    """The opened store, or what SQLite said when it found the file damaged; other failures raise."""
    try:
        return _open(path, journal)
    except sqlite3.Error as error:
        if not damaged(error):
            raise_for(path, error)
        return str(error)


def _open(path: Path, journal: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        mode = db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        # WAL stays consistent without an fsync per commit; a rollback journal needs them.
        db.execute("PRAGMA synchronous=NORMAL" if mode == "wal" else "PRAGMA synchronous=FULL")
        migrate(db, path)
        # Read what a kernel reads first and writes next (the newest runs, the unfinished ones),
        # so a store damaged there is found now, not in the middle of a cell.
        db.execute("SELECT max(id) FROM runs").fetchone()
        db.execute(f"SELECT count(*) FROM runs WHERE status IN ({', '.join('?' * len(UNFINISHED))})", tuple(UNFINISHED))
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _move_aside(path: Path) -> Path:
    """Rename the damaged file and its journals to ``NAME.corrupt-<time>[-wal|-journal]`` (SQLite
    still pairs them), drop its shared-memory index; the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    count = 1
    while moved.exists():
        count += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{count}")
    path.rename(moved)
    for suffix in JOURNAL_SUFFIXES:
        journal = path.with_name(path.name + suffix)
        if journal.exists():
            journal.rename(moved.with_name(moved.name + suffix))
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return moved


def _continue_ids(db: sqlite3.Connection, damaged_file: Path, logs: Path) -> None:
    """Start the new store's ids above the damaged one's (and above every run log), so that
    salvaged rows keep their ids and no new run overwrites an old run's log."""
    highest = highest_ids(damaged_file)
    if logs.is_dir():
        numbers = [int(log.stem) for log in logs.glob("*.log") if log.stem.isdigit()]
        highest["runs"] = max([highest.get("runs", 0), *numbers])
    db.execute("BEGIN IMMEDIATE")
    for table, seq in highest.items():
        raised = db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, table))
        if seq > 0 and not raised.rowcount:
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq))
    db.execute("COMMIT")


def sqlite_code(error: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``error`` (None if unknown)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    return next((value for text, value in _BY_MESSAGE.items() if text in str(error)), None)


def damaged(error: sqlite3.Error) -> bool:
    """Whether ``error`` says the file's content is broken (not locked, not missing, not full)."""
    return sqlite_code(error) in (_CORRUPT, _NOTADB)


def may_be_full(error: sqlite3.Error) -> bool:
    """Whether ``error`` may mean no room: SQLite says "full" for ENOSPC, but a write over the
    user's quota (EDQUOT) reaches it only as a disk I/O error."""
    return sqlite_code(error) in (_FULL, _IOERR)


def raise_for(path: Path, error: sqlite3.Error) -> NoReturn:
    """Raise the ``StoreError`` that says what ``error`` means for the store at ``path``, or
    ``error`` itself when it is not about the store (a constraint, a bug in a query)."""
    mapped = describe(path, error)
    if mapped is None:
        raise error
    raise mapped from error


def describe(path: Path, error: sqlite3.Error) -> StoreError | None:
    """The one-line ``StoreError`` for what went wrong with the store at ``path``; None when
    ``error`` is not about the store."""
    code = sqlite_code(error)
    if code in (_BUSY, _LOCKED):
        return StoreError(
            f"the run store {path} stayed locked by another process for {BUSY_TIMEOUT:g} s; let it finish "
            f"or stop it (`fuser {path}` names it), or set JX_DATA_DIR to use another store",
            path,
        )
    if code in (_PERM, _READONLY, _CANTOPEN, _AUTH):
        return _unusable(path, error)
    if code == _FULL:
        return no_room(path.parent, free_bytes(path.parent))
    if code == _IOERR:
        return StoreError(
            f"the run store {path} cannot be read or written ({error}: a failing disk, a lost network mount "
            "or a spent quota); check the disk holding it (`quota -s` shows a quota), then `jupyter-exec store check`",
            path,
        )
    if code in (_CORRUPT, _NOTADB):
        return StoreError(
            f"the run store {path} is damaged ({error}); `jupyter-exec store check` says how badly, "
            f"`jupyter-exec store recover {path}` salvages its rows into a new store",
            path,
        )
    return None


def _unusable(path: Path, error: BaseException) -> StoreError:
    denied = getattr(error, "errno", None) == errno.EACCES or not all(
        os.access(p, os.R_OK | os.W_OK) for p in (path, path.parent) if p.exists()
    )
    reason = "permission denied" if denied else str(error)
    return StoreError(
        f"cannot use the run store {path} ({reason}); give your user read and write access to it and its "
        "directory, or set JX_DATA_DIR to a directory of your own",
        path,
    )
