"""Pre-started bootstrap processes, each used for exactly one run.

Starting Python costs tens of milliseconds; a worker that is already past start-up and
waiting for its request on stdin costs about one. Each worker runs one cell and is
discarded, so nothing carries over between runs. Workers start with a minimal
environment (never the kernel's: it may hold tokens) and carry ``JX_OWNER_PID`` so the
workers of a dead kernel can be found and killed.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import subprocess
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.protocol import BOOTSTRAP_PATH

from .cgroups import RunCgroup, cgroup_support

__all__ = ["Worker", "WorkerPool", "namespace_support", "reap_workers"]

OWNER_VAR = "JX_OWNER_PID"
_BASE_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TZ")


def worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _BASE_ENV_NAMES if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {OWNER_VAR: str(os.getpid()), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    )
    return env


def _namespace_prefix(network: bool) -> list[str]:
    """``unshare`` with new pid and mount namespaces (and net unless ``network``); mounts are
    private, so what a run mounts (its ``/dev/shm``) never propagates to the host."""
    flags = ["--pid", "--mount", "--propagation", "private", "--fork", "--kill-child", "--mount-proc"]
    return ["unshare", *flags] if network else ["unshare", "--net", *flags]


@functools.cache
def namespace_support() -> str | None:
    """None if new pid/mount/net namespaces can be made here, else why not (checked once)."""
    try:
        done = subprocess.run([*_namespace_prefix(False), "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare not usable: {error}"
    if done.returncode != 0:
        return f"unshare refused: {done.stderr.decode(errors='replace').strip() or done.returncode}"
    return None


@dataclass(frozen=True)
class WorkerKey:
    python: str
    namespaces: bool
    network: bool


class Worker:
    """One started bootstrap: its process, the three pipes the host reads, and (where the
    host allows) its own cgroup, joined while it waits so a run only sets the limits."""

    def __init__(self, key: WorkerKey) -> None:
        self.key = key
        read_fd, write_fd = os.pipe()
        command = [key.python, "-I", str(BOOTSTRAP_PATH), str(write_fd)]
        if key.namespaces:
            command = _namespace_prefix(key.network) + command
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=worker_env(),
                cwd="/",
            )
        finally:
            os.close(write_fd)
        self.protocol_fd = read_fd
        self.ready_bytes = b""
        self.cgroup: RunCgroup | None = None

    def prepare(self) -> None:
        """Wait for the bootstrap, then put its whole tree in a cgroup of its own."""
        self.wait_ready()
        if cgroup_support() is None and self.cgroup is None:
            self.cgroup = RunCgroup(f"jx-{os.getpid()}-w{self.pid}")
            self.cgroup.add(self.tree())

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> bytes:
        """Block until the bootstrap says ready; return any protocol bytes read past it."""
        while b"\n" not in self.ready_bytes:
            readable, _, _ = select.select([self.protocol_fd], [], [], timeout)
            chunk = os.read(self.protocol_fd, 65536) if readable else b""
            if not chunk:
                stderr = self._drain_stderr()
                self.kill()
                raise NodeFailedError(f"the sandbox process did not start: {stderr or 'no answer'}")
            self.ready_bytes += chunk
        return self.ready_bytes

    def _drain_stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None  # started with stderr=PIPE
        return self.process.stderr.read().decode(errors="replace").strip()[-2000:]

    def tree(self) -> list[int]:
        """This worker's process and its descendants (the bootstrap under ``unshare``)."""
        pids, frontier = [], [self.pid]
        while frontier:
            pid = frontier.pop()
            pids.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    frontier += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def kill(self) -> None:
        """SIGKILL the process group and everything in the cgroup (setsid cannot escape it)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.cgroup.procs() if self.cgroup else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.kill()
        if self.cgroup is not None:
            self.cgroup.kill_and_remove()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            os.close(self.protocol_fd)
        except OSError:
            pass
        if self.process.returncode is None:
            self.process.wait()


class WorkerPool:
    """Idle workers per key, refilled in the background after each take."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: dict[WorkerKey, deque[Worker]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._closed = False

    def take(self, key: WorkerKey) -> Worker:
        with self._lock:
            queue = self._idle[key]
            worker = None
            while queue and worker is None:
                candidate = queue.popleft()
                if candidate.process.poll() is None:
                    worker = candidate
                else:
                    candidate.close()
        if self.size > 0:
            threading.Thread(target=self._refill, args=(key,), daemon=True, name="jx-pool-refill").start()
        if worker is None:
            worker = Worker(key)
            try:
                worker.prepare()
            except BaseException:
                worker.close()
                raise
        return worker

    def _refill(self, key: WorkerKey) -> None:
        while True:
            with self._lock:
                if self._closed or len(self._idle[key]) >= self.size:
                    return
            worker = Worker(key)
            try:
                worker.prepare()
            except NodeFailedError:
                worker.close()
                return
            with self._lock:
                if self._closed:
                    worker.close()
                    return
                self._idle[key].append(worker)

    def warm(self, key: WorkerKey) -> None:
        """Start filling the pool for ``key`` now, so the first run finds a worker."""
        if self.size > 0:
            threading.Thread(target=self._refill, args=(key,), daemon=True, name="jx-pool-warm").start()

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._idle.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = [w for q in self._idle.values() for w in q]
            self._idle.clear()
        for worker in workers:
            worker.close()


def reap_workers() -> int:
    """Kill workers (and what they started) whose owning kernel is gone. Returns how many."""
    reaped = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        owner = next((v[len(OWNER_VAR) + 1 :] for v in environ if v.startswith(OWNER_VAR.encode() + b"=")), None)
        if owner is None or not owner.isdigit() or pid_alive(int(owner)):
            continue
        try:
            os.kill(int(entry.name), signal.SIGKILL)
            reaped += 1
        except (ProcessLookupError, PermissionError):
            pass
    return reaped
