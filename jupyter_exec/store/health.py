"""``jupyter-exec store check | vacuum | recover``, and the store's lines in ``doctor``.

A check never changes the file: it opens it read-only (no migration, no moving aside), runs
SQLite's integrity check, and reports sizes, row counts, the oldest and newest run, the
journal mode against what its filesystem calls for, free space, and damaged stores kept
beside it for recovery. ``recover`` copies what ``salvage`` reads from a damaged file into a
store with the rows' own ids, skipping ids the store has: running it twice adds nothing twice.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_exec.errors import StoreError
from jupyter_exec.units import format_bytes

from .filesystems import Filesystem, filesystem_of, journal_mode
from .opening import connect, damaged, describe
from .pages import JOURNAL_SUFFIXES
from .salvage import TABLES, salvage
from .space import free_bytes, no_room

__all__ = ["Health", "Recovered", "damaged_copies", "inspect", "recover", "vacuum"]


@dataclass
class Health:
    """What a check found; ``problems`` are one line each, ending with the fix."""

    path: Path
    exists: bool = False
    size: int = 0
    filesystem: Filesystem | None = None
    journal: str = ""  # what the file uses now ("" if it cannot be read)
    version: int | None = None
    integrity: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    oldest: float | None = None
    newest: float | None = None
    free: int = 0
    kept: list[Path] = field(default_factory=list)  # damaged stores moved aside beside it
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def notes(self) -> list[str]:
        """What is worth knowing though nothing is wrong: where the store is kept, damaged copies beside it."""
        notes = []
        if self.filesystem is not None and self.filesystem.network:
            notes.append(f"on a network filesystem, {self.filesystem.describe()}: rollback journal, not WAL")
        notes.extend(
            f"damaged store kept for recovery: {kept} ({format_bytes(kept.stat().st_size)}); "
            f"`jupyter-exec store recover {kept}` copies its runs into this store"
            for kept in self.kept
        )
        return notes

    def summary(self) -> str:
        """One line: where, how big, how many runs, which journal on which filesystem, free space."""
        if not self.exists:
            return f"{self.path}: no store yet (the first run makes it); {format_bytes(self.free)} free"
        where = self.filesystem.type if self.filesystem else "an unknown filesystem"
        count = self.counts.get("runs")
        runs = "" if count is None else f"{count:,} run{'' if count == 1 else 's'}, "
        journal = f"{self.journal} journal on " if self.journal else ""
        return f"{self.path}: {runs}{format_bytes(self.size)}, {journal}{where}, {format_bytes(self.free)} free"

    def report(self) -> str:
        """The whole check, for ``jupyter-exec store check``."""
        lines = [self.summary()]
        if self.exists:
            lines.append(f"  schema version {self.version}, integrity: {self.integrity[0] if self.integrity else '-'}")
            lines.extend(f"    {line}" for line in self.integrity[1:])
            for suffix in JOURNAL_SUFFIXES:
                extra = Path(f"{self.path}{suffix}")
                if extra.exists():
                    lines.append(f"  {extra.name}: {format_bytes(extra.stat().st_size)}")
            lines.extend(f"  {table:12} {count:,} rows" for table, count in self.counts.items())
            if self.oldest is not None and self.newest is not None:
                lines.append(f"  oldest run {_when(self.oldest)}, newest {_when(self.newest)}")
        lines.extend(f"  {note}" for note in self.notes())
        lines.extend(f"  PROBLEM: {problem}" for problem in self.problems)
        return "\n".join(lines)


def inspect(path: Path, *, min_free: int = 0, thorough: bool = True) -> Health:
    """Check the store at ``path`` without changing it (``thorough``: every page, else SQLite's quicker check)."""
    health = Health(Path(path), exists=Path(path).exists())
    health.free = free_bytes(health.path.parent)
    health.filesystem = filesystem_of(health.path)
    health.kept = damaged_copies(health.path)
    if min_free and health.free < min_free:
        health.problems.append(str(no_room(health.path.parent, health.free, min_free)))
    if not health.exists:
        return health
    health.size = health.path.stat().st_size
    try:
        db = sqlite3.connect(f"{health.path.as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as error:
        health.problems.append(_problem(health.path, error))
        return health
    try:
        _read(db, health, thorough)
    except sqlite3.Error as error:
        health.problems.append(_problem(health.path, error))
    finally:
        db.close()
    wanted = journal_mode(health.path)
    if health.journal and health.journal != wanted:
        health.problems.append(
            f"{health.path} uses the {health.journal} journal but its filesystem calls for {wanted}; "
            "close every kernel using it, then run `jupyter-exec store check` again (the next kernel switches it)"
        )
    return health


def _read(db: sqlite3.Connection, health: Health, thorough: bool) -> None:
    health.journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    health.version = db.execute("PRAGMA user_version").fetchone()[0]
    pragma = "integrity_check" if thorough else "quick_check"
    found = "\n".join(row[0] for row in db.execute(f"PRAGMA {pragma}(10)"))
    health.integrity = [line for line in found.splitlines() if line and not line.startswith("***")]
    if health.integrity != ["ok"]:
        health.problems.append(
            f"{health.path} is damaged ({health.integrity[0]}); `jupyter-exec store recover {health.path}` "
            "salvages its rows into a new store"
        )
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    try:
        for table in TABLES:
            if table in tables:
                health.counts[table] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if "runs" in tables:
            health.oldest, health.newest = db.execute("SELECT min(created), max(created) FROM runs").fetchone()
    except sqlite3.DatabaseError:
        if health.ok:
            raise
        # already reported as damaged: the counts stop where the damage is


def _problem(path: Path, error: sqlite3.Error) -> str:
    if damaged(error):
        return (
            f"{path} is damaged ({error}); `jupyter-exec store recover {path}` salvages its rows "
            "(the next kernel moves it aside and starts a new store)"
        )
    return str(describe(path, error) or error)


def damaged_copies(path: Path) -> list[Path]:
    """Damaged stores moved aside beside the store at ``path`` (``NAME.corrupt-<time>``), oldest first."""
    return sorted(
        p for p in Path(path).parent.glob(f"{Path(path).name}.corrupt-*") if not p.name.endswith(JOURNAL_SUFFIXES)
    )


def vacuum(path: Path) -> tuple[int, int]:
    """Fold the journal into the file and rebuild it without free pages; its size before and after."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path}: nothing to vacuum (the first run makes it)", path)
    before = sum(Path(f"{path}{s}").stat().st_size for s in ("", *JOURNAL_SUFFIXES) if Path(f"{path}{s}").exists())
    free = free_bytes(path.parent)
    if free < before:  # VACUUM writes a new copy of the whole file first
        raise no_room(path.parent, free, before)
    db = connect(path)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as error:
        raise describe(path, error) or StoreError(f"vacuum of {path} failed: {error}", path) from error
    finally:
        db.close()
    return before, path.stat().st_size


@dataclass
class Recovered:
    """What ``recover`` copied: rows found and rows added, per table."""

    source: Path
    into: Path
    found: dict[str, int]
    added: dict[str, int]
    methods: list[str]

    def report(self) -> str:
        lines = [f"salvaged from {self.source} into {self.into} ({', '.join(self.methods)}):"]
        for table in TABLES:
            found, added = self.found.get(table, 0), self.added.get(table, 0)
            lines.append(f"  {table:12} {found:6} found, {added:6} added, {found - added:6} already there")
        return "\n".join(lines)


def recover(source: Path, into: Path, *, use_sqlite3: bool = True) -> Recovered:
    """Copy what ``salvage`` finds in ``source`` into the store at ``into`` (made if missing), ids kept."""
    found = salvage(source, use_sqlite3=use_sqlite3)
    db = connect(Path(into))
    added: dict[str, int] = {}
    try:
        columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")} for table in TABLES}
        db.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            added[table] = 0
            for row in found.rows[table].values():
                names = [name for name in row if name in columns[table]]
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [row[name] for name in names],
                )
                added[table] += cursor.rowcount
        db.execute("COMMIT")
    finally:
        db.close()
    return Recovered(Path(source), Path(into), {t: len(r) for t, r in found.rows.items()}, added, found.methods)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
