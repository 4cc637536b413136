"""Resource samples of a running run, about once a second, for widgets and the record.

A backend answers ``sample(handle)`` with what it can read now (memory in bytes, CPU
seconds so far, GPU figures when it has them); ``Monitor`` asks on a thread, turns CPU
seconds into a percentage, keeps the peak memory and hands each sample to a callback.
The callback sees plain dicts (``events.Sample``), so the core never needs to know who is watching.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypedDict

from .events import Sample

__all__ = ["Monitor", "Usage", "proc_usage"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Usage(TypedDict, total=False):
    """What a run uses now, as its backend reads it (``ExecutorBackend.sample``): what it can tell."""

    memory: int | None  # bytes
    cpu_seconds: float | None  # so far
    gpu: float  # percent
    gpu_memory: int  # bytes


def proc_usage(pids: Iterable[int]) -> Usage:
    """Resident memory and CPU seconds (children already waited for included) of ``pids``,
    from /proc; processes that are gone count as nothing."""
    memory, ticks = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/statm", "rb") as statm:
                memory += int(statm.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return {"memory": memory, "cpu_seconds": ticks / _TICKS}


class Monitor:
    """Samples one run until ``stop`` (or the run's end), calling ``emit(sample)`` each time.

    A sample is ``{"kind": "sample", "t": seconds since start, "memory": bytes, "cpu": percent
    of one core, ...}`` plus whatever else the backend reported (``gpu``, ``gpu_memory``).
    """

    def __init__(self, read: Callable[[], Usage | None], emit: Callable[[Sample], None], interval: float = 1.0) -> None:
        self.read, self.emit, self.interval = read, emit, interval
        self.peak_memory: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="jx-monitor")

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 1)

    def _run(self) -> None:
        started = time.monotonic()
        last: tuple[float, float] | None = None  # (when, cpu seconds) of the previous reading
        wait = min(self.interval, 0.3)  # the first look comes early, for short runs
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                reading = self.read()
            except Exception:  # the run ended under us: there is nothing left to read
                reading = None
            if not reading:
                continue
            now = time.monotonic()
            sample: Sample = {"kind": "sample", "t": round(now - started, 2)}
            if "memory" in reading:
                sample["memory"] = reading["memory"]
            if "gpu" in reading:
                sample["gpu"] = reading["gpu"]
            if "gpu_memory" in reading:
                sample["gpu_memory"] = reading["gpu_memory"]
            cpu_seconds = reading.get("cpu_seconds")
            if cpu_seconds is not None and last is not None and now > last[0]:
                sample["cpu"] = round(max(0.0, cpu_seconds - last[1]) / (now - last[0]) * 100, 1)
            if cpu_seconds is not None:
                last = (now, cpu_seconds)
            memory = reading.get("memory")
            if memory:
                self.peak_memory = max(self.peak_memory or 0, memory)
            self.samples += 1
            self.emit(sample)
