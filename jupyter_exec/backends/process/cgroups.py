"""One control group per run, for limits rlimits cannot give.

``RLIMIT_NPROC`` does not bind root and ``RLIMIT_AS`` counts address space rather than
memory, so where the kernel lets us (root, cgroup v1 or v2) a run gets its own group
with ``pids.max``, a memory limit without swap, a CPU quota, an OOM counter and a peak
reading, and is killed as a group. Groups are named ``jx-<owner pid>-<run>`` so the
groups of a dead kernel can be found and removed.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import time
from pathlib import Path

from jupyter_exec._proc import pid_alive

__all__ = ["RunCgroup", "cgroup_support", "reap_cgroups"]

ROOT = Path("/sys/fs/cgroup")
PARENT = "jupyter-exec"
_CONTROLLERS = ("pids", "memory", "cpu")
_NAME_RE = re.compile(r"^jx-(\d+)-")


def _is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def _parents() -> dict[str, Path]:
    """Where each controller's jupyter-exec groups live."""
    if _is_v2():
        return {c: ROOT / PARENT for c in _CONTROLLERS}
    return {c: ROOT / c / PARENT for c in _CONTROLLERS}


@functools.cache
def cgroup_support() -> str | None:
    """None if per-run groups work here, else the reason they do not (checked once)."""
    if os.geteuid() != 0:
        return "not running as root, so no cgroup of our own can be made"
    try:
        if _is_v2():
            available = (ROOT / "cgroup.controllers").read_text().split()
            missing = [c for c in _CONTROLLERS if c not in available]
            if missing:
                return f"cgroup v2 lacks the {', '.join(missing)} controller(s)"
            (ROOT / PARENT).mkdir(exist_ok=True)
            for level in (ROOT, ROOT / PARENT):
                (level / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _CONTROLLERS))
        else:
            for controller, parent in _parents().items():
                if not parent.parent.is_dir():
                    return f"cgroup v1 has no {controller} hierarchy mounted"
                parent.mkdir(exist_ok=True)
    except OSError as error:
        return f"cannot create cgroups: {error}"
    return None


class RunCgroup:
    """The control group of one run (one directory per controller on v1)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dirs = {c: p / name for c, p in _parents().items()}
        for path in set(self.dirs.values()):
            path.mkdir(exist_ok=True)

    def _write(self, controller: str, filename: str, value: str) -> None:
        (self.dirs[controller] / filename).write_text(value)

    def _read(self, controller: str, filename: str) -> str:
        try:
            return (self.dirs[controller] / filename).read_text()
        except OSError:
            return ""

    def set_limits(self, *, memory: int | None, pids: int | None, cpus: float | None) -> None:
        v2 = _is_v2()
        if pids is not None:
            self._write("pids", "pids.max", str(pids))
        if memory is not None:
            if v2:
                self._write("memory", "memory.max", str(memory))
                self._write("memory", "memory.swap.max", "0")
            else:
                self._write("memory", "memory.limit_in_bytes", str(memory))
                if (self.dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                    self._write("memory", "memory.memsw.limit_in_bytes", str(memory))
        if cpus is not None:
            period = 100_000
            if v2:
                self._write("cpu", "cpu.max", f"{int(cpus * period)} {period}")
            else:
                self._write("cpu", "cpu.cfs_period_us", str(period))
                self._write("cpu", "cpu.cfs_quota_us", str(int(cpus * period)))

    def add(self, pids: list[int]) -> None:
        for path in set(self.dirs.values()):
            for pid in pids:
                try:
                    (path / "cgroup.procs").write_text(str(pid))
                except ProcessLookupError:
                    pass

    def oom_killed(self) -> bool:
        text = self._read("memory", "memory.events" if _is_v2() else "memory.oom_control")
        match = re.search(r"^oom_kill (\d+)", text, re.M)
        return bool(match and int(match.group(1)) > 0)

    def memory_current(self) -> int | None:
        text = self._read("memory", "memory.current" if _is_v2() else "memory.usage_in_bytes")
        return int(text) if text.strip().isdigit() else None

    def peak_memory(self) -> int | None:
        text = self._read("memory", "memory.peak" if _is_v2() else "memory.max_usage_in_bytes")
        return int(text) if text.strip().isdigit() else None

    def procs(self) -> list[int]:
        found: set[int] = set()
        for path in set(self.dirs.values()):
            found.update(int(p) for p in self._read_procs(path))
        return sorted(found)

    @staticmethod
    def _read_procs(path: Path) -> list[str]:
        try:
            return (path / "cgroup.procs").read_text().split()
        except OSError:
            return []

    def kill_and_remove(self, wait: float = 2.0) -> None:
        """SIGKILL everything in the group, then remove it."""
        deadline = time.monotonic() + wait
        while (pids := self.procs()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for path in set(self.dirs.values()):
            try:
                path.rmdir()
            except OSError:
                pass


def reap_cgroups() -> int:
    """Kill and remove the groups of kernels that no longer exist. Returns how many."""
    if cgroup_support() is not None:
        return 0
    reaped = set()
    for parent in set(_parents().values()):
        for path in parent.glob("jx-*"):
            match = _NAME_RE.match(path.name)
            if match and not pid_alive(int(match.group(1))):
                RunCgroup(path.name).kill_and_remove()
                reaped.add(path.name)
    return len(reaped)
