"""Tables of runs, envs and cache entries, for ``%jx runs`` / ``%jx envs`` / ``%jx cache`` (a
pandas DataFrame when pandas is installed, else a list of dicts)."""

from __future__ import annotations

import json
from typing import Any

from .cache import CacheEntries
from .envs.cache import EnvIndex
from .store.records import COLUMNS, RunRecords

__all__ = ["cache_table", "envs_table", "runs_table"]

_ENV_COLUMNS = ["hash", "status", "target", "size", "uses", "builds", "last_used", "created", "spec", "build_log"]


def runs_table(records: RunRecords, limit: int = 50) -> Any:
    """The newest runs; ``node`` is where a Ray run ran (its node id's first 12 characters, as --node takes);
    ``items`` what a map's items came to, ``from`` the run a cached one replays, ``refused`` how many
    connections a ``--network HOST,...`` run had refused."""
    rows = []
    for row in records.runs(limit=limit, columns=(*COLUMNS, "details")):
        details = json.loads(row.get("details") or "{}")
        shown: dict[str, Any] = {key: value for key, value in row.items() if key != "details"}
        shown["node"] = (details.get("node_id") or "")[:12] or None
        shown["items"] = _items(details) if "items" in details else None
        shown["from"] = details.get("cached_from")
        shown["refused"] = (details.get("network") or {}).get("refused")  # a host list's refused connections
        rows.append(shown)
    try:
        import pandas
    except ImportError:
        return rows
    frame = pandas.DataFrame(rows)
    if not frame.empty:
        frame["created"] = pandas.to_datetime(frame["created"], unit="s")
        frame["from"] = frame["from"].astype("Int64")
        frame["refused"] = frame["refused"].astype("Int64")
        columns = [c for c in frame.columns if c != "node"]
        columns.insert(columns.index("isolation") + 1, "node")
        frame = frame[columns].set_index("id")
    return frame


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
