"""The rows that can still be read from a damaged store file (``jupyter-exec store recover``).

Two readers, merged: SQLite's own ``.recover`` (through the ``sqlite3`` command, when it is
installed and manages the file) and ``pages.PageFile``, which reads the file page by page in
Python and so works everywhere, even on a file whose header is garbage. Rows are found by
walking each table's b-tree from its root page (named in the file's schema, which lives on
page 1 beyond the header); leaves no walk reaches (under a torn interior page) are read too,
and each of their rows goes to the table whose columns it fits. A row must fit its table
(column count, NOT NULL, types) to be kept: bytes of a torn page do not become runs.

``health.recover`` copies the rows into a store with their ids.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pages import JOURNAL_SUFFIXES, PageFile
from .schema import MIGRATIONS

__all__ = ["TABLES", "Salvaged", "highest_ids", "salvage"]

#: The tables worth salvaging, in the order rows are copied (a trace before its nodes).
TABLES = ("runs", "trace_meta", "trace_nodes", "envs")

#: Columns holding JSON, and columns holding a time (epoch seconds) or an amount that cannot be
#: negative: what a row's values must look like beyond their types. A cell cut by a torn page
#: keeps its record header and so its types; its values then fail these.
_JSON = frozenset({"spec", "details", "params", "metrics"})
_TIMES = frozenset({"created", "started", "ended", "last_used", "cancel_requested"})
_AMOUNTS = frozenset({"duration", "cpu_seconds", "peak_memory", "size", "uses", "builds", "owner_pid"})
_EPOCH = (1e9, 4e9)  # 2001 .. 2096


@dataclass(frozen=True)
class _Column:
    name: str
    affinity: str  # INTEGER, REAL, TEXT or "" (anything)
    required: bool  # NOT NULL
    rowid: bool  # INTEGER PRIMARY KEY: stored as the row's key, NULL in the record


@dataclass
class Salvaged:
    """What could be read: rows by table (column -> value), keyed by rowid, and how."""

    rows: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in TABLES})
    methods: list[str] = field(default_factory=list)
    unplaced: int = 0  # decoded rows that fit no table


def salvage(path: Path, *, use_sqlite3: bool = True) -> Salvaged:
    """Every row of ``TABLES`` that can be read from the file at ``path``."""
    result = Salvaged()
    if use_sqlite3 and shutil.which("sqlite3"):
        outcome = _sqlite3_recover(Path(path), result)
        result.methods.append(f"sqlite3 .recover: {outcome}")
    found = _page_rows(PageFile(Path(path)))
    added = 0
    for table, rows in found.rows.items():
        for rowid, row in rows.items():
            if rowid not in result.rows[table]:  # SQLite's own reading wins where both found a row
                result.rows[table][rowid] = row
                added += 1
    result.unplaced += found.unplaced
    result.methods.append(f"page scan: {sum(len(r) for r in found.rows.values())} rows ({added} more)")
    return result


def highest_ids(path: Path) -> dict[str, int]:
    """The largest rowid each table of the (damaged) file at ``path`` may hold; 0 where unknown."""
    try:
        rows = _page_rows(PageFile(path)).rows
    except OSError:
        return {}
    return {table: max(found, default=0) for table, found in rows.items()}


def _page_rows(pages: PageFile) -> Salvaged:
    schemas, roots = _schemas(pages)
    known = _known_columns()
    result = Salvaged()
    reached: set[int] = set()
    for table in TABLES:
        root, columns = schemas.get(table, (0, known[table]))
        for number in pages.leaves(root) if root else ():
            reached.add(number)
            for cell in pages.cells(number):
                row = _fit(cell.values, cell.rowid, columns)
                if row is not None:
                    result.rows[table].setdefault(cell.rowid, row)
    # Leaves under a torn interior page, or in a file whose schema is lost: place rows by fit.
    candidates = {table: schemas[table][1] if table in schemas else known[table] for table in TABLES}
    skip = reached | roots | pages.freelist()
    for number in pages.table_leaves():
        if number in skip or number == 1:
            continue
        for cell in pages.cells(number):
            placed = _place(cell.values, cell.rowid, candidates)
            if placed is None:
                result.unplaced += 1
            elif cell.rowid not in result.rows[placed[0]]:
                result.rows[placed[0]][cell.rowid] = placed[1]
    return result


def _schemas(pages: PageFile) -> tuple[dict[str, tuple[int, list[_Column]]], set[int]]:
    """Root page and columns of each salvageable table, from the file's own schema (page 1), and
    the root pages of every table and index it names."""
    found: dict[str, tuple[int, list[_Column]]] = {}
    roots: set[int] = set()
    for number in pages.leaves(1):
        for cell in pages.cells(number):
            values = cell.values
            if len(values) != 5 or not isinstance(values[3], int) or not isinstance(values[4], str):
                continue
            roots.add(values[3])
            if values[0] != "table" or values[1] not in TABLES:
                continue
            try:
                found[values[1]] = (values[3], _columns_from_sql(values[1], values[4]))
            except sqlite3.Error:
                continue
    return found, roots


def _known_columns() -> dict[str, list[_Column]]:
    """The columns of each table as this jupyter-exec makes them (when the file's schema is lost)."""
    db = sqlite3.connect(":memory:")
    try:
        for step in MIGRATIONS:
            db.executescript(step.sql)
        return {table: _columns_of(db, table) for table in TABLES}
    finally:
        db.close()


def _columns_from_sql(table: str, sql: str) -> list[_Column]:
    db = sqlite3.connect(":memory:")
    try:
        db.execute(sql)
        return _columns_of(db, table)
    finally:
        db.close()


def _columns_of(db: sqlite3.Connection, table: str) -> list[_Column]:
    info = db.execute(f"PRAGMA table_info({table})").fetchall()
    keys = [row for row in info if row[5]]
    columns = []
    for _cid, name, declared, notnull, _default, pk in info:
        declared = (declared or "").upper()
        affinity = next((a for a in ("INT", "REAL", "TEXT") if a in declared), "")
        rowid = bool(pk) and len(keys) == 1 and declared == "INTEGER"
        columns.append(_Column(name, affinity, bool(notnull), rowid))
    return columns


def _fit(values: tuple[Any, ...], rowid: int, columns: list[_Column]) -> dict[str, Any] | None:
    """The row as column -> value if ``values`` can be a row of a table with ``columns``; else None.

    A record may hold fewer values than the table has columns (written before an ``ALTER ...
    ADD COLUMN``): the missing ones are NULL.
    """
    if len(values) > len(columns):
        return None
    row: dict[str, Any] = {}
    for i, column in enumerate(columns):
        value = values[i] if i < len(values) else None
        if column.rowid:
            value = rowid
        if value is None:
            if column.required:
                return None
        elif not (_has_affinity(value, column.affinity) and _plausible(column.name, value)):
            return None
        row[column.name] = value
    return row


def _plausible(name: str, value: Any) -> bool:
    if name in _JSON:
        try:
            json.loads(value)
        except (TypeError, ValueError):
            return False
    elif name in _TIMES:
        return bool(_EPOCH[0] < value < _EPOCH[1])
    elif name in _AMOUNTS:
        return bool(value >= 0)
    return True


def _has_affinity(value: Any, affinity: str) -> bool:
    if affinity == "INT":
        return isinstance(value, int)
    if affinity == "REAL":
        return isinstance(value, (int, float))
    if affinity == "TEXT":
        return isinstance(value, str)
    return True


def _place(values: tuple[Any, ...], rowid: int, tables: dict[str, list[_Column]]) -> tuple[str, dict[str, Any]] | None:
    """The one table a loose row fits (preferring one whose column count it matches exactly)."""
    fits = [(table, row) for table, columns in tables.items() if (row := _fit(values, rowid, columns)) is not None]
    exact = [(table, row) for table, row in fits if len(tables[table]) == len(values)]
    for choice in (exact, fits):
        if len(choice) == 1:
            return choice[0]
    return None


def _sqlite3_recover(path: Path, result: Salvaged) -> str:
    """Rows SQLite's own ``.recover`` finds, into ``result``; what happened, in a few words."""
    with tempfile.TemporaryDirectory(prefix="jx-recover-") as scratch:
        copy = Path(scratch) / "damaged.sqlite3"
        shutil.copyfile(path, copy)  # .recover may write the file's journal; the damaged file stays as it is
        for suffix in JOURNAL_SUFFIXES:
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        try:
            done = subprocess.run(
                ["sqlite3", str(copy), ".recover"], capture_output=True, text=True, errors="replace", timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"could not run ({error})"
        if done.returncode != 0 or "INSERT" not in done.stdout:
            return f"found nothing ({(done.stderr.strip().splitlines() or ['no rows'])[-1]})"
        out = sqlite3.connect(Path(scratch) / "recovered.sqlite3")
        try:
            out.executescript(done.stdout)
            count = _read_recovered(out, result)
        except sqlite3.Error as error:
            return f"its output could not be read ({error})"
        finally:
            out.close()
    return f"{count} rows"


def _read_recovered(db: sqlite3.Connection, result: Salvaged) -> int:
    count = 0
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in TABLES:
        if table not in tables:
            continue
        columns = _columns_of(db, table)
        for record in db.execute(f"SELECT rowid, * FROM {table}").fetchall():
            row = _fit(record[1:], record[0], columns)
            if row is not None:
                result.rows[table][record[0]] = row
                count += 1
    return count
