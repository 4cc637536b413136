"""The words for where a run is: one enum that the store, traces, widgets and the side panel share.

``queued`` (recorded, not started) -> ``running`` -> one of the final statuses; a run served
from the cache of identical runs (``--cache``) goes straight to ``cached``. The
side panel's ``labextension/src/tokens.ts`` and the run widget's ``run.js`` repeat the
final set; a test checks them against ``FINAL``.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["FINAL", "UNFINISHED", "Status"]


class Status(str, Enum):
    """A run's (or a trace node's) status; compares and serialises as its plain string."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    CACHED = "cached"  # nothing ran: the output and values of an identical earlier run, replayed

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)  # f"{Status.OOM}" is "oom" on every Python


FINAL: frozenset[Status] = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.OOM, Status.CANCELLED, Status.CACHED}
)
UNFINISHED: frozenset[Status] = frozenset({Status.QUEUED, Status.RUNNING})
