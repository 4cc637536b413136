"""The connections of host-list runs (``--network HOST,...``): one row per connection the run's
proxy saw, allowed or refused, with its bytes each way; ``%jx show``, ``%jx runs --all``, the
run panel and the side panel read them here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from .database import Database

__all__ = ["ConnectionRow", "RunConnections"]

_COLUMNS = ("host", "port", "allowed", "reason", "sent", "received", "started", "seconds")
_PICKED = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_COLUMNS) + 1))
# the rows arrive as one JSON array of arrays: one statement, however many
_INSERT = f"INSERT INTO run_connections (run_id, {', '.join(_COLUMNS)}) SELECT {_PICKED} FROM json_each(?)"


class ConnectionRow(TypedDict):
    """One connection: where, whether allowed (and why not), bytes out and in, when, how long."""

    host: str
    port: int
    allowed: bool
    reason: str
    sent: int  # bytes from the cell to the host
    received: int  # bytes from the host to the cell
    started: float  # epoch seconds
    seconds: float


class RunConnections(Database):
    """The ``run_connections`` table."""

    def keep(self, run_id: int, connections: Iterable[Mapping[str, Any]]) -> None:
        """Add a run's connections (as ``proxy.Connection.as_dict`` gives them)."""
        rows = [(run_id, *(c[name] for name in _COLUMNS)) for c in connections]
        if rows:
            self._execute(_INSERT, (json.dumps(rows),))

    def of(self, run_id: int) -> list[ConnectionRow]:
        """A run's connections, in the order they were made."""
        found = self._execute(
            f"SELECT {', '.join(_COLUMNS)} FROM run_connections WHERE run_id=? ORDER BY rowid", (run_id,)
        )
        return [ConnectionRow(**{**dict(row), "allowed": bool(row["allowed"])}) for row in found]  # type: ignore[typeddict-item]

    def refused(self, run_ids: Iterable[int]) -> dict[int, int]:
        """How many connections each of ``run_ids`` had refused (runs with none are left out)."""
        ids = list(run_ids)
        if not ids:
            return {}
        found = self._execute(
            "SELECT run_id, COUNT(*) AS n FROM run_connections WHERE allowed = 0 AND run_id IN "
            "(SELECT value FROM json_each(?)) GROUP BY run_id",
            (json.dumps(ids),),
        )
        return {row["run_id"]: row["n"] for row in found}
