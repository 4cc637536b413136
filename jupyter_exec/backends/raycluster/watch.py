"""Noticing that the cluster went away, in seconds, while the kernel is connected to it.

When a cluster's head goes, Ray leaves a driver's ``ray.get`` waiting (a task on the head
never reports) and, a minute later, ends the whole driver process: the kernel would die with
it. So one thread asks the GCS for its cluster id every ``EVERY`` seconds (one small gRPC
call). The cluster is gone when nothing listens at its address twice in a row, when another
cluster answers there (the head was restarted), or when no answer comes for ``SILENT_FOR``
seconds (a host that went down; a busy head answers well within that). Then ``on_gone`` is
called once, with what was seen; the connection ends the runs and lets go of Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .probe import Gcs, GcsGone

__all__ = ["EVERY", "SILENT_FOR", "Watch"]

EVERY = 2.0  # seconds between looks while the cluster answers
_RECHECK = 1.0  # ... and while it does not
_ANSWER_WITHIN = 2.0  # one look's deadline
SILENT_FOR = 15.0  # seconds without any answer that mean the cluster is gone
_REFUSALS = 2  # looks in a row that found nothing listening


class Watch:
    """One thread per connection that watches its cluster's GCS."""

    def __init__(self, target: str, cluster_id: bytes, on_gone: Callable[[str], None]) -> None:
        self.target, self.cluster_id, self.on_gone = target, cluster_id, on_gone
        self._gcs = Gcs(target)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="jx-ray-watch")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def look(self) -> str | None:
        """One look now (a run just lost its node: was it the head?): what shows the cluster is
        gone, or None if it answers as before or cannot tell yet."""
        try:
            cluster_id = self._gcs.cluster_id(_ANSWER_WITHIN)
        except GcsGone as gone:
            return "nothing listens there any more" if gone.refused else None
        return None if cluster_id == self.cluster_id else self._restarted()

    def _restarted(self) -> str:
        return "another cluster answers there: its head was restarted"

    def _loop(self) -> None:
        try:
            why = self._until_gone()
        finally:
            self._gcs.close()
        if why is not None:
            self.on_gone(why)

    def _until_gone(self) -> str | None:
        """What showed the cluster is gone; None if stopped first."""
        silent_since: float | None = None
        refusals = 0
        while not self._stop.wait(EVERY if silent_since is None else _RECHECK):
            try:
                cluster_id = self._gcs.cluster_id(_ANSWER_WITHIN)
            except GcsGone as gone:
                now = time.monotonic()
                silent_since = silent_since or now
                refusals = refusals + 1 if gone.refused else 0
                if refusals >= _REFUSALS:
                    return "nothing listens there any more"
                if now - silent_since >= SILENT_FOR:
                    return f"its GCS has not answered for {now - silent_since:.0f} s: {gone}"
                continue
            if cluster_id != self.cluster_id:
                return self._restarted()
            silent_since, refusals = None, 0
        return None
