"""Tables of runs, envs and cache entries, for ``%jx runs`` / ``%jx envs`` / ``%jx cache`` (a
pandas DataFrame when pandas is installed, else a list of dicts)."""

from __future__ import annotations

import io
import json
import time
import tokenize
from typing import Any

from .backends.base import SessionInfo
from .cache import CacheEntries
from .envs.cache import EnvIndex
from .store.records import RunRecords, RunRow
from .units import format_bytes, format_duration, format_elapsed

__all__ = ["cache_table", "envs_table", "run_line", "run_name", "runs_table", "sessions_table", "text_table"]

_ENV_COLUMNS = ["hash", "status", "target", "size", "uses", "builds", "last_used", "created", "spec", "build_log"]

#: The columns ``%jx runs`` reads by default (it shows name, status, backend, node, session and
#: refused where a run has one, started, duration, peak memory, error); every column for ``--all``.
_READ = ("id", "name", "code", "status", "backend", "created", "started", "duration", "peak_memory", "error")
_ALL = tuple(RunRow.__annotations__)
_NAME_WIDTH, _ERROR_WIDTH = 40, 100


def runs_table(records: RunRecords, limit: int = 50, *, every_column: bool = False) -> Any:
    """The newest ``limit`` runs for reading: a map is one row (its batches folded under it: ``%jx
    show N`` lists them), sizes and durations in human units, integers as integers, nothing as "";
    ``refused`` is how many connections a ``--network HOST,...`` run had refused. ``every_column``:
    every column of the runs table as well, and ``node`` (where a Ray run ran, as --node takes it),
    ``items`` (what a map's items came to), ``from`` (the run a cached one replays)."""
    rows = records.runs(limit=limit, columns=_ALL if every_column else (*_READ, "details"), batches=False)
    batches = records.batches({row["id"] for row in rows}, columns=("id",))
    shown = [_readable(row, len(batches.get(row["id"], [])), every_column) for row in rows]
    for column in ("node", "session", "refused"):  # shown only where a run has one
        if not every_column and not any(row[column] for row in shown):
            for row in shown:
                del row[column]
    try:
        import pandas
    except ImportError:
        return shown
    return pandas.DataFrame(shown, dtype=object).set_index("id") if shown else pandas.DataFrame(shown)


def _readable(row: RunRow, batches: int, every_column: bool) -> dict[str, Any]:
    """One run as ``%jx runs`` shows it."""
    details = json.loads(row.get("details") or "{}")
    error = row.get("error") or ""
    shown: dict[str, Any] = {
        "id": row["id"],
        "name": run_name(row, batches, map_run="items" in details),
        "status": row["status"],
        "backend": row["backend"],
        "node": (details.get("node_id") or "")[:12],
        "session": f"{details['session']} #{details['cell']}" if "session" in details else "",
        "started": _when(row.get("started") or row.get("created")),
        "duration": "" if row.get("duration") is None else format_elapsed(row["duration"] or 0),
        "peak memory": "" if not row.get("peak_memory") else format_bytes(row["peak_memory"]),
        "refused": (details.get("network") or {}).get("refused") or "",  # a host list's refused connections
        "error": error if every_column else _shorten(_first_line(error), _ERROR_WIDTH),
    }
    if every_column:
        shown["items"] = _items(details) if "items" in details else ""
        shown["from"] = details.get("cached_from") or ""
        shown["batches"] = batches or ""
        for key, value in row.items():
            if key not in shown and key != "peak_memory":
                shown[key] = _cell(key, value)
    return shown


def _cell(key: str, value: Any) -> Any:
    """One stored value for reading: times as local dates, seconds and bytes in units, no NaN or None."""
    if value is None:
        return ""
    if key in ("created", "started", "ended", "cancel_requested"):
        return _when(value)
    if key == "cpu_seconds":
        return format_elapsed(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


def run_name(row: RunRow, batches: int = 0, *, map_run: bool = False) -> str:
    """What tells a run apart in a list: its name, else the first line of its code; a map's
    name with its work and how many batches ran it (``RunRecords.batches``)."""
    code = _without_comment(_first_line(row.get("code") or ""))
    name = row.get("name") or code
    if map_run or batches:
        name = f"{name}: {code}" + (f" ({batches} batches)" if batches else "")
    return _shorten(name, _NAME_WIDTH)


def _first_line(text: str) -> str:
    """The first line of ``text`` that says something (not a blank line or a comment)."""
    lines = [line.strip() for line in text.splitlines()]
    return next((line for line in lines if line and not line.startswith("#")), lines[0] if lines else "")


def _without_comment(line: str) -> str:
    """``line`` of code up to its comment, if it has one (a ``#`` inside a string is not one):
    ``model = fit(df)   # run once`` reads ``model = fit(df)``."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.COMMENT:
                return line[: token.start[1]].rstrip() or line
    except (tokenize.TokenError, SyntaxError):  # a line cut inside a bracket or a string
        pass
    return line


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run_line(row: RunRow) -> str:
    """A run in one line: ``run 12 (name) failed after 1.2 s: ZeroDivisionError: division by zero``."""
    duration = row.get("duration")
    took = f" after {format_elapsed(duration)}" if duration is not None else ""
    error = f": {row['error']}" if row.get("error") else ""
    return f"run {row['id']} ({run_name(row)}) {row['status']}{took}{error}"


def text_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """``rows`` under ``header`` as aligned plain text (a terminal's table)."""
    cells = [tuple(map(str, row)) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def sessions_table(sessions: list[SessionInfo]) -> Any:
    """The kernel's sandbox sessions: name, backend, age and idle time, memory held, cells run, the run
    it runs now."""
    now = time.time()
    rows = [
        {
            "name": info["name"],
            "backend": info["backend"],
            "age": format_duration(round(now - info["started"])),
            "idle": format_duration(round(info["idle"])),
            "memory": "" if info["memory"] is None else format_bytes(info["memory"]),
            "cells": info["cells"],
            "running": info["running"] or "",
            "forked_from": info["forked_from"] or "",
        }
        for info in sessions
    ]
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(
        rows, columns=["name", "backend", "age", "idle", "memory", "cells", "running", "forked_from"]
    ).set_index("name")


def _items(details: dict[str, Any]) -> str:
    """A map's items in a few words: "1000 items: 999 ok, 1 failed, 600 from the cache"."""
    counts = [f"{details[k]} {word}" for k, word in _COUNTS if details.get(k)]
    return f"{details['items']} items" + (f": {', '.join(counts)}" if counts else "")


_COUNTS = (("succeeded", "ok"), ("failed", "failed"), ("cached", "from the cache"))


def cache_table(cache: CacheEntries) -> Any:
    """The cache of identical runs: each entry's key (its first 12 characters, as ``%jx cache clear``
    takes), the run it came from, size, hits, when made and last used, the start of its code."""
    rows = cache.entries()
    for row in rows:
        row["key"] = row["key"][:12]
    try:
        import pandas
    except ImportError:
        return rows
    frame = pandas.DataFrame(
        rows, columns=["key", "run_id", "backend", "size", "hits", "created", "last_used", "trusted", "code"]
    )
    for column in ("last_used", "created"):
        frame[column] = pandas.to_datetime(frame[column], unit="s")
    return frame.set_index("key")


def envs_table(index: EnvIndex) -> Any:
    """The runtime-env cache: what is built, how big, when last used."""
    rows = index.all()
    try:
        import pandas
    except ImportError:
        return rows
    frame = pandas.DataFrame(rows, columns=_ENV_COLUMNS)
    for column in ("last_used", "created"):
        frame[column] = pandas.to_datetime(frame[column], unit="s")
    return frame.set_index("hash")
