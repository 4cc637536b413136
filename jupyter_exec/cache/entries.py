"""The cache's entries, in the run store's file: one row per key, the least recently used
evicted first once the entries pass their size cap.

An entry holds what a hit replays: the run's output in order (stdout and stderr chunks,
displays) and its value and ``--out`` values as the sandbox sent them, tagged JSON data.
Only a run with ``--trust`` may leave a pickle in there, and only a run with ``--trust``
(whose key says so) is ever served one: ``put`` refuses any other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec.store.database import Database

__all__ = ["CacheEntries", "CacheHit"]


@dataclass(frozen=True)
class CacheHit:
    """A stored entry: the run it came from, its output chunks, its value and ``--out`` values."""

    run_id: int
    output: list[list[Any]]
    value: Any
    outputs: dict[str, Any]


def _holds_pickle(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("$t") == "pickle" or any(_holds_pickle(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_pickle(v) for v in value)
    return False


class CacheEntries(Database):
    """The ``run_cache`` table; entries beyond ``max_size`` bytes are evicted, oldest use first."""

    def __init__(self, path: Path, max_size: int) -> None:
        super().__init__(path)
        self.max_size = max_size

    def get(self, key: str) -> CacheHit | None:
        """The entry for ``key`` (marked as used now), or None."""
        row = self._execute("SELECT run_id, entry FROM run_cache WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        self._execute("UPDATE run_cache SET last_used=?, hits=hits + 1 WHERE key=?", (time.time(), key))
        entry = json.loads(row["entry"])
        return CacheHit(row["run_id"], entry.get("output", []), entry.get("value"), entry.get("outputs", {}))

    def put(
        self,
        key: str,
        *,
        run_id: int,
        backend: str,
        code: str,
        trusted: bool,
        output: list[list[Any]],
        value: Any,
        outputs: dict[str, Any],
    ) -> bool:
        """Keep a succeeded run's output and values under ``key``; False if it is too big to keep.
        A pickle among the values of a run without ``--trust`` is refused (``ValueError``)."""
        return (
            self.put_many(
                [(key, {"output": output, "value": value, "outputs": outputs})], run_id, backend, code, trusted
            )
            == 1
        )

    def put_many(
        self, entries: list[tuple[str, dict[str, Any]]], run_id: int, backend: str, code: str, trusted: bool
    ) -> int:
        """Keep each entry (``output``, ``value``, ``outputs``) under its key, then evict once; how
        many were kept (one bigger than the whole cache is not)."""
        if not trusted and any(
            _holds_pickle(entry.get("value")) or _holds_pickle(entry.get("outputs")) for _, entry in entries
        ):
            raise ValueError("a pickle from a run without --trust is never cached")
        now, kept = time.time(), 0
        for key, entry in entries:
            text = json.dumps(entry)
            if len(text) > self.max_size:
                continue
            self._execute(
                "INSERT OR REPLACE INTO run_cache (key, run_id, backend, code, trusted, size, created, last_used,"
                " entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, run_id, backend, code, int(trusted), len(text), now, now, text),
            )
            kept += 1
        self._evict()
        return kept

    def _evict(self) -> None:
        total = self._execute("SELECT COALESCE(SUM(size), 0) AS bytes FROM run_cache").fetchone()
        if total is None or total["bytes"] <= self.max_size:
            return
        rows = self._execute("SELECT key, size FROM run_cache ORDER BY last_used DESC").fetchall()
        kept, evicted = 0, []
        for row in rows:
            kept += row["size"]
            if kept > self.max_size:
                evicted.append(row["key"])
        for start in range(0, len(evicted), 500):
            chunk = evicted[start : start + 500]
            self._execute(f"DELETE FROM run_cache WHERE key IN ({', '.join('?' * len(chunk))})", tuple(chunk))

    def entries(self) -> list[dict[str, Any]]:
        """Every entry's key, origin, backend, size, uses and times (not its content), newest use first."""
        rows = self._execute(
            "SELECT key, run_id, backend, size, hits, created, last_used, trusted, substr(code, 1, 80) AS code"
            " FROM run_cache ORDER BY last_used DESC"
        ).fetchall()
        return [dict(r) for r in rows]

    def size(self) -> tuple[int, int]:
        """(entries, bytes)."""
        row = self._execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM run_cache").fetchone()
        assert row is not None
        return row["n"], row["bytes"]

    def clear(self, prefix: str = "") -> int:
        """Remove the entries whose key starts with ``prefix`` (all: ""); how many."""
        return self._execute("DELETE FROM run_cache WHERE key LIKE ?", (prefix.replace("%", "") + "%",)).rowcount
