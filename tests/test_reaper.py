"""The reaper kills what kernels that died left behind, and only that: the pid a run's process
names as its kernel's is a pid of the kernel's pid namespace, so a kernel on a host judges
nothing of a container's (where that pid is some other process's, or nobody's, on the host)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import require

from jupyter_exec.backends.process.templates import OWNER_NS_VAR, OWNER_VAR, pid_namespace
from jupyter_exec.backends.process.workers import reap_workers


def _free_pid() -> int:
    """A pid no process has here now: a dead kernel's."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(pid for pid in range(pid_max - 1, 1000, -1) if not Path(f"/proc/{pid}").exists())


def _with_owner(owner: int) -> list[int]:
    """Processes that name ``owner`` as their kernel, in any pid namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"{OWNER_VAR}={owner}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_dead_kernels_process_is_reaped_and_a_containers_is_not():
    require(shutil.which("unshare") is not None, "unshare not installed (apt-get install util-linux)")
    dead = _free_pid()
    here = subprocess.Popen(["sleep", "60"], env={OWNER_VAR: str(dead), OWNER_NS_VAR: pid_namespace()})
    # As in a container: a pid namespace of its own, where the kernel's pid is another process's.
    inside = f"exec env {OWNER_VAR}={dead} {OWNER_NS_VAR}=$(stat -L -c %i /proc/self/ns/pid) sleep 60"
    there = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "sh", "-c", inside], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while len(_with_owner(dead)) < 2:
            assert there.poll() is None and time.monotonic() < deadline, "the namespaced sleep did not start"
            time.sleep(0.05)
        (contained,) = set(_with_owner(dead)) - {here.pid}
        reap_workers()
        assert here.wait(5) == -signal.SIGKILL
        assert Path(f"/proc/{contained}").exists() and there.poll() is None
    finally:
        here.kill()
        os.killpg(there.pid, signal.SIGKILL)
        there.wait()
