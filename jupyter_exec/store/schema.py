"""The store file's schema as numbered migrations; ``PRAGMA user_version`` says how far a file is.

Every table of the file (runs, traces, the env index) is here, in the order it shipped. A
file is brought up to date when any part of the code opens it, in one ``BEGIN IMMEDIATE``
transaction, so two kernels opening an old file at once migrate it once. A change to the
schema is a new ``Migration`` at the end; a shipped one is never edited.

Files made before ``user_version`` was used (all of them say 0) are adopted: the
``CREATE ... IF NOT EXISTS`` steps are harmless to repeat, and a step that is not (an
``ALTER``) carries ``present``, a query that finds its effect already there. The broker's
file from before it shared this schema (also 0, a ``runs`` table of its own shape) is
adopted too: ``BROKER_FIRST`` sets its runs aside, the steps build the file as any other,
and its runs are taken back in with their ids.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from jupyter_exec.errors import StoreError

__all__ = ["BROKER_FIRST", "LATEST", "MIGRATIONS", "Adoption", "Migration", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One step: ``sql`` takes a file from ``version - 1`` to ``version``."""

    version: int
    what: str
    sql: str
    present: str | None = None  # for files from before user_version: a query that finds this step done


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the runs table, as first released",
        """
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
        );
        CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
        """,
    ),
    Migration(
        2,
        "experiment traces: trace_meta and trace_nodes",
        """
        CREATE TABLE IF NOT EXISTS trace_meta (
            name     TEXT PRIMARY KEY,
            metric   TEXT NOT NULL,
            maximize INTEGER NOT NULL,
            created  REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS trace_nodes (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            trace     TEXT NOT NULL REFERENCES trace_meta(name),
            parent    INTEGER,
            status    TEXT NOT NULL,
            code      TEXT NOT NULL,
            params    TEXT NOT NULL,
            spec      TEXT NOT NULL,
            metrics   TEXT NOT NULL DEFAULT '{}',
            error     TEXT,
            run_id    INTEGER,
            owner_pid INTEGER NOT NULL,
            created   REAL NOT NULL,
            ended     REAL
        );
        CREATE INDEX IF NOT EXISTS trace_nodes_trace ON trace_nodes(trace, id);
        """,
    ),
    Migration(
        3,
        "the runtime-env cache index",
        """
        CREATE TABLE IF NOT EXISTS envs (
            hash      TEXT PRIMARY KEY,
            target    TEXT NOT NULL,
            path      TEXT NOT NULL,
            spec      TEXT NOT NULL,
            status    TEXT NOT NULL,          -- building | ready | failed
            size      INTEGER NOT NULL DEFAULT 0,
            created   REAL NOT NULL,
            last_used REAL,
            uses      INTEGER NOT NULL DEFAULT 0,
            builds    INTEGER NOT NULL DEFAULT 0,
            build_log TEXT,
            error     TEXT
        );
        """,
    ),
    Migration(
        4,
        "runs.cancel_requested: when someone asked to cancel a run (epoch seconds)",
        "ALTER TABLE runs ADD COLUMN cancel_requested REAL;",
        present="SELECT 1 FROM pragma_table_info('runs') WHERE name = 'cancel_requested'",
    ),
    Migration(
        5,
        "the cache of identical runs (--cache): one entry per key, least recently used evicted first",
        """
        CREATE TABLE IF NOT EXISTS run_cache (
            key       TEXT PRIMARY KEY,
            run_id    INTEGER NOT NULL,          -- the run it came from
            backend   TEXT NOT NULL,
            code      TEXT NOT NULL,
            trusted   INTEGER NOT NULL,          -- 1: the run had --trust (its values may be pickles)
            size      INTEGER NOT NULL,
            created   REAL NOT NULL,
            last_used REAL NOT NULL,
            hits      INTEGER NOT NULL DEFAULT 0,
            entry     TEXT NOT NULL              -- output and values as data (JSON)
        );
        CREATE INDEX IF NOT EXISTS run_cache_lru ON run_cache(last_used);
        """,
    ),
    Migration(
        6,
        "runs at a broker: the user each ran for, its number in the sending kernel's store, its image and runtime",
        """
        ALTER TABLE runs ADD COLUMN user TEXT;
        ALTER TABLE runs ADD COLUMN client_run INTEGER;
        ALTER TABLE runs ADD COLUMN image TEXT;
        ALTER TABLE runs ADD COLUMN runtime TEXT;
        CREATE INDEX IF NOT EXISTS runs_user ON runs(user, id) WHERE user IS NOT NULL;
        """,
    ),
    Migration(
        7,
        "the connections of --network HOST,... runs: one row each, allowed or refused, with its bytes",
        """
        CREATE TABLE IF NOT EXISTS run_connections (
            run_id   INTEGER NOT NULL,
            host     TEXT NOT NULL,
            port     INTEGER NOT NULL,
            allowed  INTEGER NOT NULL,
            reason   TEXT NOT NULL,               -- why it was refused, or how it ended early
            sent     INTEGER NOT NULL,            -- bytes from the cell
            received INTEGER NOT NULL,            -- bytes to the cell
            started  REAL NOT NULL,
            seconds  REAL NOT NULL
        );
        CREATE INDEX IF NOT EXISTS run_connections_run ON run_connections(run_id);
        """,
    ),
    Migration(
        8,
        "each run's timeline: its marks (queued, admitted, ..., decoded) as JSON, so new marks need no column",
        """
        ALTER TABLE runs ADD COLUMN timeline TEXT;
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


@dataclass(frozen=True)
class Adoption:
    """A file of another shape at version 0, found by the query ``found``: ``before`` sets its
    tables aside, the migrations build the file as any other, ``after`` takes their rows in."""

    what: str
    found: str
    before: str
    after: str


BROKER_FIRST = Adoption(
    "the broker's runs as first released (its own runs table, before version 6)",
    "SELECT 1 FROM pragma_table_info('runs') WHERE name = 'user'",
    """
    ALTER TABLE runs RENAME TO broker_runs_v1;
    DROP INDEX IF EXISTS runs_user;
    """,
    # Renaming its sqlite_sequence row keeps the ids going on above every run it ever had (logs/N.log).
    # It kept no code (only the hash), no pid and, of the spec, the limits.
    """
    UPDATE sqlite_sequence SET name = 'runs' WHERE name = 'broker_runs_v1';
    INSERT INTO runs (
        id, kernel, owner_pid, name, backend, isolation, spec, code, code_hash, status, error, exit_code,
        created, started, ended, duration, peak_memory, details, user, client_run, image, runtime
    )
    SELECT
        id, COALESCE(kernel, ''), 0, name, 'container', 'container',
        '{"backend": "container", "limits": ' || COALESCE(limits, '{}') || '}', '', COALESCE(code_hash, ''),
        status, error, exit_code, created, started, ended, duration, peak_memory, details,
        user, client_run, image, runtime
    FROM broker_runs_v1 ORDER BY id;
    DROP TABLE broker_runs_v1;
    """,
)


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the file behind ``db`` (autocommit mode) up to ``LATEST``; the version it was at.

    A file from a newer jupyter-exec is refused rather than written with an older idea of it.
    """
    found = _version(db)
    if found == LATEST:
        return found
    if found > LATEST:
        raise _newer(path, found)
    db.execute("BEGIN IMMEDIATE")  # one migrator at a time; the others wait, then find it done
    try:
        found = _version(db)
        if found > LATEST:
            raise _newer(path, found)
        legacy = found == 0 and _has_tables(db)
        adopted = legacy and db.execute(BROKER_FIRST.found).fetchone() is not None
        if adopted:
            _script(db, BROKER_FIRST.before)
        for step in MIGRATIONS[found:]:
            if legacy and step.present and db.execute(step.present).fetchone():
                continue
            _script(db, step.sql)
        if adopted:
            _script(db, BROKER_FIRST.after)
        db.execute(f"PRAGMA user_version = {LATEST}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return found


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is not None


def _script(db: sqlite3.Connection, sql: str) -> None:
    for statement in _statements(sql):
        db.execute(statement)


def _statements(sql: str) -> list[str]:
    """The statements of a script, one by one (``executescript`` would commit our transaction)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [s for s in statements if s]


def _newer(path: Path, version: int) -> StoreError:
    return StoreError(
        f"the run store {path} has schema version {version}, newer than this jupyter-exec knows ({LATEST}): "
        "it was written by a newer jupyter-exec; upgrade this one (pip install -U jupyter-exec), "
        "or set JX_DATA_DIR to another directory",
        path,
    )
