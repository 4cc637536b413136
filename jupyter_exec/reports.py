"""Tables of runs and envs, for ``%jx runs`` / ``%jx envs`` (a pandas DataFrame when pandas
is installed, else a list of dicts)."""

from __future__ import annotations

import json
from typing import Any

from .envs.cache import EnvIndex
from .store import COLUMNS, Store

__all__ = ["envs_table", "runs_table"]

_ENV_COLUMNS = ["hash", "status", "target", "size", "uses", "builds", "last_used", "created", "spec", "build_log"]


def runs_table(store: Store, limit: int = 50) -> Any:
    """The newest runs; ``node`` is where a Ray run ran (its node id's first 12 characters, as --node takes)."""
    rows = store.runs(limit=limit, columns=(*COLUMNS, "details"))
    for row in rows:
        row["node"] = (json.loads(row.pop("details") or "{}").get("node_id") or "")[:12] or None
    try:
        import pandas
    except ImportError:
        return rows
    frame = pandas.DataFrame(rows)
    if not frame.empty:
        frame["created"] = pandas.to_datetime(frame["created"], unit="s")
        columns = [c for c in frame.columns if c != "node"]
        columns.insert(columns.index("isolation") + 1, "node")
        frame = frame[columns].set_index("id")
    return frame


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
