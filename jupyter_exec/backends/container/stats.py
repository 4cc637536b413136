"""Resource samples of a running container from the engine's stats stream (about 1/s).

Peak memory, CPU seconds, CPU % and pids, gathered on a thread while the run goes on.
On cgroup v1 Docker also reports the cgroup's own high-water mark (``max_usage``),
which catches peaks between samples. An engine that keeps no memory cgroup per container
(rootless Podman on cgroup v1) answers with its whole user's usage: those figures are not the
container's and are dropped (the run's own peak, from inside, stands alone).
"""

from __future__ import annotations

import threading
from typing import Any

from .engine import Engine

__all__ = ["Sampler"]


class Sampler:
    """Reads the engine's stats (``docker stats``) for one container until it ends or ``stop`` is called."""

    def __init__(self, engine: Engine, container_id: str) -> None:
        self.engine, self.container_id = engine, container_id
        self._own_memory = "memory" in engine.facts.cgroup_limits  # else the engine's figure is not this container's
        self.started = False
        self.samples = 0
        self.memory: int | None = None  # latest, without the page cache (as `docker stats`)
        self.peak_memory: int | None = None
        self.cpu_seconds: float | None = None
        self.peak_pids: int | None = None
        self.peak_cpu_percent: float | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.started = True
        threading.Thread(target=self._run, daemon=True, name=f"jx-docker-stats-{self.container_id[:12]}").start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            for sample in self.engine.client.api.stats(self.container_id, stream=True, decode=True):
                if self._stop.is_set():
                    return
                self._take(sample)
        except Exception:  # the container went away under the stream: sampling is over
            return

    def _take(self, sample: dict[str, Any]) -> None:
        memory = (sample.get("memory_stats") or {}) if self._own_memory else {}
        cpu, before = sample.get("cpu_stats") or {}, sample.get("precpu_stats") or {}
        total = (cpu.get("cpu_usage") or {}).get("total_usage")
        if not total and not memory:
            return  # the container is not running (yet, or any more)
        self.samples += 1
        self.memory = memory.get("usage") or self.memory
        used = max(memory.get("max_usage") or 0, memory.get("usage") or 0)
        if memory.get("usage") is not None:
            cache = (memory.get("stats") or {}).get("cache") or (memory.get("stats") or {}).get("inactive_file") or 0
            self.memory = max(0, memory["usage"] - cache)
        self.peak_memory = max(self.peak_memory or 0, used) or None
        if total:
            self.cpu_seconds = total / 1e9
            used_delta = total - ((before.get("cpu_usage") or {}).get("total_usage") or 0)
            system_delta = (cpu.get("system_cpu_usage") or 0) - (before.get("system_cpu_usage") or 0)
            if before.get("system_cpu_usage") and system_delta > 0:
                percent = used_delta / system_delta * (cpu.get("online_cpus") or 1) * 100
                self.peak_cpu_percent = max(self.peak_cpu_percent or 0.0, round(percent, 1))
        pids = (sample.get("pids_stats") or {}).get("current")
        if pids is not None:
            self.peak_pids = max(self.peak_pids or 0, pids)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "peak_memory": self.peak_memory,
            "cpu_seconds": self.cpu_seconds,
            "peak_pids": self.peak_pids,
            "peak_cpu_percent": self.peak_cpu_percent,
        }
