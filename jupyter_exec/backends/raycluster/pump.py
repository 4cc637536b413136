"""Bringing a Ray cell's live output into the kernel, pulling from the relay only when it pays.

Workers push numbered output chunks to the kernel's relay actor (``ray_task.OutputRelay``);
one thread here long-polls the relay and hands each chunk to its run, in order. A relay
that dies (its worker killed) is replaced before the next run (``relay_died``).

A thread waiting in ``ray.get`` on that long poll makes every other Ray call of the
process slower (about 0.2 ms a task on 2 cores), the user's own ``ray.get`` included. So
the pump pulls only while a run has gone on for ``LIVE_AFTER`` seconds (a short cell's
output waits that long at most, then comes all at once) or while a run that has ended
still misses chunks it sent. A kernel that runs short cells never polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["LIVE_AFTER", "OutputPump"]

LIVE_AFTER = 0.05  # seconds a run goes before its output is pulled live
PULL_SECONDS = 0.5  # longest wait of one pull; a pull returns as soon as a chunk comes
_RETRY_SECONDS = 0.5  # after a failed pull (cluster gone, relay killed)


class OutputTarget(Protocol):
    began: float  # time.monotonic() at submission
    wants_output: bool  # ended, with chunks still to come

    def deliver(self, seq: int, items: list) -> None: ...


class OutputPump:
    """One thread per connection that delivers relay chunks to the runs being tracked."""

    def __init__(self, ray: Any, relay: Callable[[], Any]) -> None:
        self._runs: dict[int, OutputTarget] = {}
        self._changed = threading.Condition()
        self._parked = False  # waiting for a first run: only then does tracking wake the thread
        self._closed = False
        self.pulls = 0  # long polls made: a kernel that runs only short, silent cells makes none
        self.relay_died = False  # the connection makes a new one before the next run
        self._thread = threading.Thread(target=self._loop, args=(ray, relay), daemon=True, name="jx-ray-output")
        self._thread.start()

    def track(self, run_id: int, run: OutputTarget) -> None:
        with self._changed:
            self._runs[run_id] = run
            if self._parked:
                self._changed.notify()

    def untrack(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def wake(self) -> None:
        """A run now wants its remaining output: pull at once."""
        with self._changed:
            self._changed.notify()

    def close(self, timeout: float) -> None:
        """Stop the thread (the caller kills the relay first, which ends a pending pull)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout)

    def _pull_due(self) -> bool:
        """Wait until a pull is due; False once closed."""
        with self._changed:
            while not self._closed:
                runs = list(self._runs.values())
                if not runs:
                    self._parked = True
                    self._changed.wait()
                    self._parked = False
                    continue
                if any(run.wants_output for run in runs):
                    return True
                wait = min(run.began for run in runs) + LIVE_AFTER - time.monotonic()
                if wait <= 0:
                    return True
                self._changed.wait(wait)
            return False

    def _loop(self, ray: Any, relay: Callable[[], Any]) -> None:
        from ray.exceptions import ActorDiedError

        while self._pull_due() and ray.is_initialized():  # never let a call re-initialise Ray
            self.pulls += 1
            try:
                batch = ray.get(relay().pull.remote(PULL_SECONDS))
            except Exception as error:  # the connection went away (shutdown, cluster lost): retry or stop
                if isinstance(error, ActorDiedError):  # its worker was killed: replaced before the next run
                    self.relay_died = True
                with self._changed:
                    self._changed.wait(_RETRY_SECONDS)
                continue
            for run_id, seq, items in sorted(batch, key=lambda chunk: (chunk[0], chunk[1])):
                run = self._runs.get(run_id)
                if run is not None:
                    run.deliver(seq, items)
