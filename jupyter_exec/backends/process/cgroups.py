"""One control group per run, for limits rlimits cannot give.

``RLIMIT_NPROC`` does not bind root and ``RLIMIT_AS`` counts address space rather than
memory, so where the kernel lets us a run gets its own group with ``pids.max``, a memory
limit without swap, a CPU quota, an OOM counter and a peak reading, and is killed as a
group. Where the groups come from (``cgroup_mode``, checked once):

- ``root``: the kernel runs as root; groups under ``jupyter-exec/`` at the top of each
  hierarchy (cgroup v1, one per controller) or of the unified one (v2);
- ``delegated``: an ordinary user on cgroup v2 whose kernel runs in a subtree delegated
  to it (a unit made with ``Delegate=yes``, a container's cgroup, with the kernel in a
  leaf of it): groups under ``jupyter-exec/`` in the lowest ancestor of the kernel's group
  that the user owns, that holds no processes itself, offers the three controllers and is
  not systemd's own (a slice, a user manager's group);
- ``systemd``: otherwise, where a user manager answers, each worker starts in a scope of
  its own (``systemd-run --user --scope -p Delegate=yes``) whose group we then write;
- none: rlimits only, and the backend says what that leaves unenforced.

Groups made here are named ``jx-<owner pid>-<worker>`` so those of a dead kernel can be
found and removed. The delegated and systemd modes need cgroup v2, which the machines CI
runs on do not have (cgroup v1): ``scripts/vm-test`` runs their tests, limits enforced
through real kernels, in a VM with cgroup v2 and systemd.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_exec._proc import pid_alive

__all__ = [
    "CgroupMode",
    "RunCgroup",
    "cgroup_mode",
    "cgroup_support",
    "delegated_parent",
    "own_cgroup",
    "reap_cgroups",
    "systemd_scope_prefix",
]

ROOT = Path("/sys/fs/cgroup")
PARENT = "jupyter-exec"
CONTROLLERS = ("pids", "memory", "cpu")
_NAME_RE = re.compile(r"^jx-(\d+)-")
_SCOPE_PROPERTIES = ("Delegate=yes", "MemoryAccounting=yes", "TasksAccounting=yes", "CPUAccounting=yes")
# Run in a probe scope: print the controllers its own group offers.
_SCOPE_PROBE = (
    "import sys; path = [l[3:] for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0]; "
    "print(open(sys.argv[1] + path.rstrip('/') + '/cgroup.controllers').read())"
)


@dataclass(frozen=True)
class CgroupMode:
    """How runs get groups here: ``kind`` root | delegated | systemd, or "" for none (then
    ``detail`` says why); ``parents`` maps each controller to where groups are made."""

    kind: str
    detail: str
    v2: bool = False
    parents: dict[str, Path] = field(default_factory=dict)


def _is_v2(root: Path = ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def own_cgroup(proc_cgroup: str) -> str | None:
    """The unified (v2) group path in a ``/proc/PID/cgroup`` text (its ``0::`` line), or None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def delegated_parent(root: Path, path: str, uid: int) -> Path | str:
    """Where an ordinary user's runs get groups on the v2 hierarchy mounted at ``root``, for a
    kernel in group ``path``: the lowest proper ancestor that ``uid`` owns, holding no
    processes (the kernel's own group does, and v2 lets only empty groups hand controllers
    down) and offering the three controllers, that no systemd manages: not a slice, nor a
    user manager's own group (it holds ``init.scope``). systemd keeps those to itself (they
    are the user's on disk, but delegated to their manager, not to the kernel), so a kernel
    under ``user@UID.service`` gets groups here only inside a unit made with ``Delegate=yes``,
    with the kernel in a leaf of it, as container runtimes do. Else why there is none (the
    lowest group's reason: the one nearest the kernel)."""
    if not path.startswith("/"):
        return f"cannot read the kernel's cgroup path {path!r}"
    parts = [p for p in path.split("/") if p]
    reasons = []
    for depth in range(len(parts) - 1, -1, -1):
        candidate = root.joinpath(*parts[:depth])
        try:
            if candidate.stat().st_uid != uid:
                break  # the top of what was delegated is passed
            if candidate.name.endswith(".slice") or (candidate / "init.scope").is_dir():
                reasons.append(f"{candidate} is systemd's to manage (a unit made with Delegate=yes is not)")
                continue
            if (candidate / "cgroup.procs").read_text().split():
                reasons.append(f"{candidate} holds processes, so it cannot hand controllers down")
                continue
            offered = (candidate / "cgroup.controllers").read_text().split()
        except OSError as error:
            reasons.append(f"cannot read {candidate}: {error}")
            break
        missing = [c for c in CONTROLLERS if c not in offered]
        control = candidate / "cgroup.subtree_control"
        if missing:
            reasons.append(f"{candidate} is not given the {', '.join(missing)} controller(s)")
        elif not os.access(control, os.W_OK) or not os.access(candidate / "cgroup.procs", os.W_OK):
            reasons.append(f"{control} is not writable")
        else:
            return candidate / PARENT
    return reasons[0] if reasons else f"the kernel's cgroup {path} has no ancestor of this user's own"


def _enable(levels: list[Path]) -> None:
    """Hand the controllers down through ``levels`` (each directory made if missing)."""
    for level in levels:
        level.mkdir(exist_ok=True)
        enabled = (level / "cgroup.subtree_control").read_text().split()
        wanted = [c for c in CONTROLLERS if c not in enabled]
        if wanted:
            (level / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))


def _all(parent: Path) -> dict[str, Path]:
    """On v2 every controller's groups are in one place."""
    return dict.fromkeys(CONTROLLERS, parent)


def _root_mode() -> CgroupMode:
    if _is_v2():
        available = (ROOT / "cgroup.controllers").read_text().split()
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            return CgroupMode("", f"cgroup v2 lacks the {', '.join(missing)} controller(s)")
        _enable([ROOT, ROOT / PARENT])
        return CgroupMode("root", f"cgroup v2, groups under {ROOT / PARENT}", True, _all(ROOT / PARENT))
    parents = {c: ROOT / c / PARENT for c in CONTROLLERS}
    for controller, parent in parents.items():
        if not parent.parent.is_dir():
            return CgroupMode("", f"cgroup v1 has no {controller} hierarchy mounted")
        parent.mkdir(exist_ok=True)
    return CgroupMode("root", "cgroup v1, groups under jupyter-exec/ in each hierarchy", False, parents)


def _user_mode() -> CgroupMode:
    if not _is_v2():
        return CgroupMode("", "not root, and this host's cgroups are v1, which delegate nothing to a user")
    path = own_cgroup(Path("/proc/self/cgroup").read_text()) or ""
    parent = delegated_parent(ROOT, path, os.geteuid())
    if isinstance(parent, Path):
        _enable([parent.parent, parent])
        return CgroupMode("delegated", f"cgroup v2, delegated to you: groups under {parent}", True, _all(parent))
    scope = _systemd_scope_support()
    if scope is None:
        return CgroupMode("systemd", "cgroup v2, a systemd user scope per worker (systemd-run --user --scope)", True)
    return CgroupMode("", f"not root; no delegated cgroup ({parent}); no systemd user scope ({scope})")


@functools.cache
def cgroup_mode() -> CgroupMode:
    """How runs get their own groups here (checked once)."""
    try:
        return _root_mode() if os.geteuid() == 0 else _user_mode()
    except OSError as error:
        return CgroupMode("", f"cannot create cgroups: {error}")


def cgroup_support() -> str | None:
    """None if per-run groups work here, else the reason they do not."""
    mode = cgroup_mode()
    return None if mode.kind else mode.detail


def systemd_scope_prefix(unit: str) -> list[str]:
    """The command that starts a worker in a user scope of its own named ``unit``."""
    properties = [arg for prop in _SCOPE_PROPERTIES for arg in ("-p", prop)]
    return ["systemd-run", "--user", "--scope", "--quiet", "--collect", f"--unit={unit}", *properties, "--"]


def _systemd_scope_support() -> str | None:
    """None if a user scope can be made here and offers the controllers, else why not."""
    if shutil.which("systemd-run") is None:
        return "systemd-run is not installed"
    command = [*systemd_scope_prefix(f"jx-probe-{os.getpid()}"), sys.executable, "-I", "-c", _SCOPE_PROBE, str(ROOT)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"systemd-run not usable: {error}"
    if done.returncode != 0:
        return f"no user manager answers: {done.stderr.strip() or done.returncode}"
    missing = [c for c in CONTROLLERS if c not in done.stdout.split()]
    return f"a user scope is not given the {', '.join(missing)} controller(s)" if missing else None


class RunCgroup:
    """The control group of one worker and its run (one directory per controller on v1)."""

    def __init__(self, dirs: dict[str, Path], v2: bool, made: bool) -> None:
        self.dirs, self.v2, self.made = dirs, v2, made
        self._written: dict[tuple[str, str], str] = {}  # what set_limits wrote, so it is not written twice

    @classmethod
    def create(cls, name: str) -> RunCgroup:
        """A new group ``name`` where this host's mode makes them."""
        mode = cgroup_mode()
        dirs = {c: p / name for c, p in mode.parents.items()}
        for path in set(dirs.values()):
            path.mkdir(exist_ok=True)
        return cls(dirs, mode.v2, made=True)

    @classmethod
    def of_process(cls, pid: int) -> RunCgroup:
        """The (v2) group ``pid`` is in: a systemd scope made for it, removed by systemd."""
        path = own_cgroup(Path(f"/proc/{pid}/cgroup").read_text()) or "/"
        return cls(_all(ROOT / path.lstrip("/")), v2=True, made=False)

    def _write(self, controller: str, filename: str, value: str, fresh: str | None = None) -> None:
        """Write ``value`` unless the file already has it (``fresh``: what a new group has)."""
        if self._written.get((controller, filename), fresh) != value:
            (self.dirs[controller] / filename).write_text(value)
            self._written[(controller, filename)] = value

    def joins(self) -> list[str]:
        """The files a process writes ``0`` to, to join this group (one per hierarchy)."""
        return sorted({str(path / "cgroup.procs") for path in self.dirs.values()})

    def _read(self, controller: str, filename: str) -> str:
        try:
            return (self.dirs[controller] / filename).read_text()
        except OSError:
            return ""

    def set_limits(self, *, memory: int | None, pids: int | None, cpus: float | None) -> None:
        """The run's limits; None is none. A group set up ahead for another run's limits (the
        pool primes new workers with the last run's) gets each one changed, and only those
        that differ are written."""
        self._write("pids", "pids.max", "max" if pids is None else str(pids), "max")
        if self.v2:
            self._write("memory", "memory.max", "max" if memory is None else str(memory), "max")
            if (self.dirs["memory"] / "memory.swap.max").exists():  # absent without swap accounting
                self._write("memory", "memory.swap.max", "max" if memory is None else "0", "max")
            period = 100_000
            self._write("cpu", "cpu.max", f"{'max' if cpus is None else int(cpus * period)} {period}", f"max {period}")
            return
        # v1: the memory+swap limit may never be below the memory limit, so it goes first up, last down.
        files = ["memory.limit_in_bytes"]
        if (self.dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
            files.append("memory.memsw.limit_in_bytes")
        now = int(self._written.get(("memory", files[0]), "-1"))
        if memory is None or (now != -1 and memory > now):
            files.reverse()
        for filename in files:
            self._write("memory", filename, "-1" if memory is None else str(memory), "-1")
        self._write("cpu", "cpu.cfs_period_us", "100000", "100000")
        self._write("cpu", "cpu.cfs_quota_us", "-1" if cpus is None else str(int(cpus * 100_000)), "-1")

    def add(self, pids: list[int]) -> None:
        for path in set(self.dirs.values()):
            for pid in pids:
                try:
                    (path / "cgroup.procs").write_text(str(pid))
                except ProcessLookupError:
                    pass

    def oom_killed(self) -> bool:
        text = self._read("memory", "memory.events" if self.v2 else "memory.oom_control")
        match = re.search(r"^oom_kill (\d+)", text, re.M)
        return bool(match and int(match.group(1)) > 0)

    def memory_current(self) -> int | None:
        text = self._read("memory", "memory.current" if self.v2 else "memory.usage_in_bytes")
        return int(text) if text.strip().isdigit() else None

    def peak_memory(self) -> int | None:
        text = self._read("memory", "memory.peak" if self.v2 else "memory.max_usage_in_bytes")
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
        """SIGKILL everything in the group, then remove it (if we made it)."""
        deadline = time.monotonic() + wait
        while (pids := self.procs()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        for path in set(self.dirs.values()) if self.made else ():
            try:
                path.rmdir()
            except OSError:
                pass


def reap_cgroups() -> int:
    """Kill and remove the groups of kernels that no longer exist. Returns how many."""
    reaped = set()
    for parent in set(cgroup_mode().parents.values()):
        for path in parent.glob("jx-*"):
            match = _NAME_RE.match(path.name)
            if match and not pid_alive(int(match.group(1))):
                RunCgroup.create(path.name).kill_and_remove()
                reaped.add(path.name)
    return len(reaped)
