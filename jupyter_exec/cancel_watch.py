"""Cancelling a run from outside the kernel that runs it: the side panel, or ``%jx cancel``
typed in another kernel.

Only the kernel running a cell can stop it, so a request is a mark on the run's row
(``RunRecords.request_cancel``), and each ``Manager`` has a ``CancelWatcher`` that looks for
marks on its own unfinished runs and cancels them through the Manager, so they end
``cancelled`` exactly as an interrupt would.

The watcher is one thread per Manager, made at its first run and parked on a condition
while nothing runs. It notes when each run starts; a run that ends within ``DELAY``
seconds is never looked at (it costs one lock and, after an idle spell, one notify); past
that, one primary-key query every ``INTERVAL`` seconds covers all the Manager's runs of
that age until none is left. The same look hands the Manager the runs that have lasted
(``lasting``), which it then marks running in the store: a short run never is, so its only
writes are its record before it starts and its finish.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from ._proc import pid_alive
from .errors import JupyterExecError
from .status import FINAL, Status
from .store.records import RunRecords, RunRow

__all__ = ["CancelWatcher", "ask_cancel", "cancel_elsewhere"]

DELAY = 0.3  # seconds a run goes before it is watched
INTERVAL = 0.3  # seconds between looks while runs are watched

_log = logging.getLogger(__name__)


class CancelWatcher:
    """Cancels the runs of one Manager that someone asked the store to cancel.

    ``runs()`` gives the ids of the Manager's unfinished runs; ``cancel(run_id)`` stops one.
    Call ``run_started()`` after a run joins ``runs()``.
    """

    def __init__(
        self,
        records: RunRecords,
        runs: Callable[[], Collection[int]],
        cancel: Callable[[int], Any],
        *,
        lasting: Callable[[frozenset[int]], Any] | None = None,
        delay: float = DELAY,
        interval: float = INTERVAL,
    ) -> None:
        self._records, self._runs, self._cancel, self._lasting = records, runs, cancel, lasting
        self._delay, self._interval = delay, interval
        self._wake = threading.Condition()
        self._since: dict[int, float] = {}  # run id -> when the watcher saw it start
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.looks = 0  # store queries made: short runs make none

    def run_started(self) -> None:
        """A run has started: it is looked at once it has gone on for ``delay`` seconds."""
        with self._wake:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="jx-cancel-watch", daemon=True)
                self._thread.start()
            idle = not self._since
            now = time.monotonic()
            for run_id in self._runs():
                self._since.setdefault(run_id, now)
            if idle:  # the watcher is parked with no deadline: give it one
                self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _due(self) -> frozenset[int] | None:
        """Wait until some runs have gone on for ``delay``; their ids, or None once stopped."""
        with self._wake:
            while not self._stopped:
                running = set(self._runs())
                for run_id in [r for r in self._since if r not in running]:
                    del self._since[run_id]
                if not self._since:
                    self._wake.wait()  # idle: parked until the next run starts
                    continue
                now = time.monotonic()
                due = frozenset(r for r, started in self._since.items() if now - started >= self._delay)
                if due:
                    return due
                self._wake.wait(min(self._since.values()) + self._delay - now)
            return None

    def _loop(self) -> None:
        asked: set[int] = set()  # cancelled already: not asked about again
        while (due := self._due()) is not None:
            asked &= due
            if self._lasting is not None:
                try:
                    self._lasting(due)
                except Exception as error:  # the store busy: marked at the next look, or when it ends
                    _log.warning("jupyter-exec: could not mark runs running: %s", error)
            if due - asked:
                self._look(due - asked, asked)
            with self._wake:
                if not self._stopped:
                    self._wake.wait(self._interval)

    def _look(self, runs: frozenset[int], asked: set[int]) -> None:
        self.looks += 1
        try:
            wanted = self._records.cancel_requests(runs)
        except sqlite3.Error as error:  # busy or closed: try again next time
            _log.warning("jupyter-exec: could not read cancel requests: %s", error)
            return
        for run_id in wanted:
            asked.add(run_id)
            try:
                self._cancel(run_id)
            except Exception as error:  # one run's backend failing must not stop the watch
                _log.warning("jupyter-exec: cancelling run %s failed: %s", run_id, error)


def ask_cancel(records: RunRecords, run_id: int) -> RunRow | None:
    """Ask the kernel running ``run_id`` to cancel it; the row as it is now (None: no such run).

    A run whose kernel has died has nobody to stop it: it is closed at once, as the next
    kernel would close it.
    """
    row = records.request_cancel(run_id)
    if row is not None and row["status"] not in FINAL and not pid_alive(row["owner_pid"]):
        records.close_orphans(pid_alive)
        row = records.get(run_id)
    return row


def cancel_elsewhere(records: RunRecords, run_id: int, wait: float = 5.0) -> str:
    """``%jx cancel N`` for a run of another kernel: ask, wait up to ``wait`` s, say what happened."""
    row = ask_cancel(records, run_id)
    if row is None:
        raise JupyterExecError(f"no run {run_id}; `%jx runs` lists them")
    if row["status"] in FINAL:
        return f"run {run_id} already finished ({row['status']})"
    deadline = time.monotonic() + wait
    while row["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        row = records.get(run_id) or row
    if row["status"] == Status.CANCELLED:
        return f"run {run_id} cancelled by its kernel ({row['kernel']})"
    if row["status"] in FINAL:
        return f"run {run_id} ended {row['status']} before it could be cancelled"
    return (
        f"cancel of run {run_id} requested; its kernel ({row['kernel']}, pid {row['owner_pid']}) has not "
        f"stopped it after {wait:g} s — it will when that kernel is responsive again"
    )
