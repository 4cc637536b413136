"""Pre-started bootstrap processes, each used for exactly one run.

Starting Python costs tens of milliseconds; a worker that is already past start-up and
waiting for its request on stdin costs about one. Each worker runs one cell and is
discarded, so nothing carries over between runs. Workers start with a minimal
environment (never the kernel's: it may hold tokens) and carry ``JX_OWNER_PID`` so the
workers of a dead kernel can be found and killed.
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.bootstrap import SUPERVISE_VAR, descendants
from jupyter_exec.runner.protocol import BOOTSTRAP_PATH

from .cgroups import RunCgroup, cgroup_mode, systemd_scope_prefix

__all__ = ["Namespaces", "Worker", "WorkerPool", "kill_tree", "namespace_support", "namespaces", "reap_workers"]

OWNER_VAR = "JX_OWNER_PID"
_BASE_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TZ")
_BUS_VARS = ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")
_WITHOUT_BUS = ("env", *(f"--unset={name}" for name in _BUS_VARS))
_serial = itertools.count()


def worker_env(supervise: bool) -> dict[str, str]:
    env = {k: os.environ[k] for k in _BASE_ENV_NAMES if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {OWNER_VAR: str(os.getpid()), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    )
    if supervise:
        env[SUPERVISE_VAR] = "1"
    return env


# New pid and mount namespaces (net unless the run has --network); mounts are private, so
# what a run mounts (its /dev/shm, /tmp) never propagates to the host.
_NAMESPACES = ("--pid", "--mount", "--propagation", "private", "--fork", "--kill-child", "--mount-proc")
# Without root: a user namespace first, the user's own uid mapped (files a run writes are
# theirs), keeping the capabilities it gives over what it owns so the bootstrap can mount.
_USER_NAMESPACE = ("--user", "--map-current-user", "--keep-caps")
# What a worker must be able to do in them: mount its own /dev/shm.
_PROBE = "import ctypes, sys; sys.exit(ctypes.CDLL(None).mount(b'jx', b'/dev/shm', b'tmpfs', 0, None) != 0)"


@dataclass(frozen=True)
class Namespaces:
    """The namespaces a worker gets here: the ``unshare`` options that work (None: none do,
    and ``why``); ``user`` when they start with a user namespace (an ordinary user)."""

    options: tuple[str, ...] | None
    user: bool = False
    why: str = ""

    def prefix(self, network: bool) -> list[str]:
        assert self.options is not None
        return ["unshare", *self.options] if network else ["unshare", "--net", *self.options]


@functools.cache
def namespaces() -> Namespaces:
    """Which namespaces workers can have here (checked once): root's own, else through a
    user namespace (Debian's default for ordinary users), else none."""
    reasons = []
    attempts: list[tuple[tuple[str, ...], bool]] = [(_NAMESPACES, False)] if os.geteuid() == 0 else []
    attempts.append(((*_USER_NAMESPACE, *_NAMESPACES), True))
    for options, user in attempts:
        found = Namespaces(options, user)
        try:
            done = subprocess.run(
                [*found.prefix(False), sys.executable, "-I", "-c", _PROBE], capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return Namespaces(None, why=f"unshare not usable: {error}")
        if done.returncode == 0:
            return found
        stderr = done.stderr.decode(errors="replace").strip()
        reasons.append(f"unshare{' --user' if user else ''} refused: {stderr or f'exit code {done.returncode}'}")
    return Namespaces(None, why="; ".join(reasons))


def namespace_support() -> str | None:
    """None if new pid/mount/net namespaces can be made here, else why not."""
    return namespaces().why if namespaces().options is None else None


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
            command = namespaces().prefix(key.network) + command
        env = worker_env(supervise=not key.namespaces)
        if cgroup_mode().kind == "systemd":
            # The user manager makes the scope; its address is for systemd-run, not the run.
            command = [*systemd_scope_prefix(f"jx-{os.getpid()}-w{next(_serial)}"), *_WITHOUT_BUS, *command]
            env.update({k: os.environ[k] for k in _BUS_VARS if k in os.environ})
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=env,
                cwd="/",
            )
        finally:
            os.close(write_fd)
        self.protocol_fd = read_fd
        self.ready_bytes = b""
        self.cgroup: RunCgroup | None = None

    def prepare(self) -> None:
        """Wait for the bootstrap, then give its whole tree a cgroup of its own (a systemd
        scope already is one)."""
        self.wait_ready()
        kind = cgroup_mode().kind
        if self.cgroup is not None or not kind:
            return
        if kind == "systemd":
            self.cgroup = RunCgroup.of_process(self.pid)
        else:
            self.cgroup = RunCgroup.create(f"jx-{os.getpid()}-w{self.pid}")
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
        return [self.pid, *descendants(self.pid)]

    def kill(self) -> None:
        """SIGKILL the worker and everything it started. In a pid namespace its init takes
        the rest along, and a cgroup is killed whole (``setsid`` escapes neither); without a
        namespace the bootstrap is a subreaper that outlives what the cell started, so that
        is killed first, all of it, found as the supervisor's descendants."""
        if not self.key.namespaces:
            kill_tree(self.pid, including_root=False)
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


def kill_tree(root: int, *, including_root: bool = True, wait: float = 2.0) -> None:
    """SIGKILL the live descendants of ``root`` until there are none (they are re-parented to
    ``root`` while it lives, if it is a subreaper), then ``root`` itself."""
    deadline = time.monotonic() + wait
    while (live := [p for p in descendants(root) if pid_alive(p)]) and time.monotonic() < deadline:
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)
    if including_root:
        try:
            os.kill(root, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap_workers() -> int:
    """Kill workers (and everything they started) whose owning kernel is gone. Returns how many."""
    reaped = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        owner = next((v[len(OWNER_VAR) + 1 :] for v in environ if v.startswith(OWNER_VAR.encode() + b"=")), None)
        if owner is None or not owner.isdigit() or pid_alive(int(owner)) or not pid_alive(int(entry.name)):
            continue
        kill_tree(int(entry.name))
        reaped += 1
    return reaped
