"""Bootstraps forked from a template, each used for exactly one run.

A worker is a child of the run's fork server (``templates``): a Python already past
start-up, in namespaces of its own and (where the host allows) a cgroup of its own,
waiting for its request on stdin. Each runs one cell and is discarded, so nothing
carries over between runs; the template it came from never runs anything. The pool keeps
``size`` idle workers per key and forks the next one in the background after each take,
which costs a few milliseconds, so cells that follow each other find one ready.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.bootstrap import descendants
from jupyter_exec.runner.protocol import FORKSERVER_PATH

from .cgroups import RunCgroup, cgroup_mode, systemd_scope_prefix
from .templates import OWNER_NS_VAR, OWNER_VAR, Forked, Template, pid_namespace

__all__ = ["Namespaces", "Worker", "WorkerPool", "kill_tree", "namespace_support", "namespaces", "reap_workers"]

_serial = itertools.count()


@dataclass(frozen=True)
class Namespaces:
    """The namespaces a worker gets here: ``mode`` ``root`` (the kernel's own privileges) or
    ``user`` (inside a user namespace of the run's own: an ordinary user), or None when
    none can be made (then ``why``)."""

    mode: str | None
    why: str = ""

    @property
    def available(self) -> bool:
        return self.mode is not None

    @property
    def user(self) -> bool:
        return self.mode == "user"


@functools.cache
def namespaces() -> Namespaces:
    """Which namespaces workers can have here (checked once, by the fork server's own code):
    root's own, else through a user namespace (Debian's default for ordinary users), else none."""
    reasons = []
    for mode in ("root", "user") if os.geteuid() == 0 else ("user",):
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(FORKSERVER_PATH), "--probe", mode], capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return Namespaces(None, why=f"cannot probe namespaces: {error}")
        if done.returncode == 0:
            return Namespaces(mode)
        stderr = done.stderr.decode(errors="replace").strip()
        reasons.append(
            f"unshare{' of a user namespace' if mode == 'user' else ''} refused: "
            f"{stderr or f'exit code {done.returncode}'}"
        )
    return Namespaces(None, why="; ".join(reasons))


def namespace_support() -> str | None:
    """None if new pid/mount/net namespaces can be made here, else why not."""
    return None if namespaces().available else namespaces().why


@dataclass(frozen=True)
class WorkerKey:
    python: str
    namespaces: bool
    network: bool


class Worker:
    """One forked bootstrap: its process, the three pipes the host reads, and (where the
    host allows) its own cgroup, joined while it waits so a run only sets the limits.
    ``own_template``: the template was started for this worker alone (a systemd scope),
    and goes with it. ``session``: the worker serves a sandbox session's cells, through the
    socket that is its ``child.stdin``."""

    def __init__(self, key: WorkerKey, template: Template, own_template: bool = False, session: bool = False) -> None:
        self.key, self.template, self.own_template = key, template, own_template
        self.made = time.time()  # a run's timeline tells a worker from the pool from one made for it
        kind = cgroup_mode().kind
        # A group of its own, which the child joins before it forks anything (so everything
        # it starts is in it); a systemd scope already is one: the template's.
        self.cgroup = RunCgroup.create(f"jx-{os.getpid()}-w{next(_serial)}") if kind in ("root", "delegated") else None
        try:
            self.child: Forked = template.fork(key.network, self.cgroup.joins() if self.cgroup else (), session)
        except BaseException:
            if self.cgroup is not None:
                self.cgroup.kill_and_remove()
            raise
        if kind == "systemd":
            self.cgroup = RunCgroup.of_process(self.child.pid)
        self.protocol_fd = self.child.protocol
        self.ready_bytes = b""

    def prepare(self) -> None:
        """Wait for the bootstrap to say it is ready."""
        self.wait_ready()

    @property
    def pid(self) -> int:
        return self.child.pid

    def alive(self) -> bool:
        """Still waiting for its request (nothing but ``ready`` said, the channel open)."""
        if not select.select([self.protocol_fd], [], [], 0)[0]:
            return True
        chunk = os.read(self.protocol_fd, 65536)
        self.ready_bytes += chunk
        return bool(chunk)

    def wait_ready(self, timeout: float = 30.0) -> bytes:
        """Block until the bootstrap says ready; return any protocol bytes read past it."""
        while b"\n" not in self.ready_bytes:
            readable, _, _ = select.select([self.protocol_fd], [], [], timeout)
            chunk = os.read(self.protocol_fd, 65536) if readable else b""
            if not chunk:
                stderr = self.child.stderr_now()
                self.kill()
                raise NodeFailedError(f"the sandbox process did not start: {stderr or 'no answer'}")
            self.ready_bytes += chunk
        return self.ready_bytes

    def tree(self) -> list[int]:
        """This worker's process and its descendants (the pid namespace's init and below)."""
        return [self.pid, *descendants(self.pid)]

    def kill(self) -> None:
        """SIGKILL the worker and everything it started. In a pid namespace its init takes
        the rest along, and a cgroup is killed whole (``setsid`` escapes neither); without a
        namespace the bootstrap is a subreaper that outlives what the cell started, so that
        is killed first, all of it, found as the supervisor's descendants."""
        if not self.key.namespaces:
            kill_tree(self.pid, including_root=False)
        for kill, target in ((os.killpg, self.pid), (os.kill, self.pid)):
            try:
                kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in self.cgroup.procs() if self.cgroup else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self, ended: bool = False) -> None:
        """Kill the worker (``ended``: its run is over, so first wait a moment for it to go by
        itself), wait until it is reaped (its cgroup is then empty: a pid namespace's init goes
        last), remove its cgroup and close its pipes."""
        if not (ended and self.child.wait(timeout=2.0)):
            self.kill()
            self.child.wait(timeout=2.0)
        if self.cgroup is not None:
            self.cgroup.kill_and_remove()
        self.child.close()
        if self.own_template:
            self.template.close()


class WorkerPool:
    """Idle workers per key, forked from one template per Python and namespace setting,
    refilled in the background after each take; ``leftovers``: what its templates remove if the
    kernel dies (see ``Template``)."""

    def __init__(self, size: int, leftovers: tuple[str, ...] = ()) -> None:
        self.size, self.leftovers = size, leftovers
        self._idle: dict[WorkerKey, deque[Worker]] = defaultdict(deque)
        self._templates: dict[tuple[str, bool], Template] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a worker was added, or a filler stopped
        self._filling: set[WorkerKey] = set()
        self._prime: dict[WorkerKey, Callable[[Worker], None]] = {}
        self._starting = threading.Lock()  # one template started at a time
        self._closed = False

    def _template(self, key: WorkerKey) -> tuple[Template, bool]:
        """The template ``key``'s workers fork from, and whether it is the worker's own."""
        mode = (namespaces().mode or "none") if key.namespaces else "none"
        if cgroup_mode().kind == "systemd":  # a scope per worker: its template goes in it
            scope = systemd_scope_prefix(f"jx-{os.getpid()}-w{next(_serial)}")
            return Template(key.python, mode, scope, self.leftovers), True
        with self._starting:
            template = self._templates.get((key.python, key.namespaces))
            if template is not None and template.alive():
                return template, False
            if template is not None:
                template.close()
            template = Template(key.python, mode, leftovers=self.leftovers)
            with self._lock:
                if self._closed:
                    template.close()
                    raise NodeFailedError("the sandbox's worker pool is closed")
                self._templates[(key.python, key.namespaces)] = template
        return template, False

    def _new_worker(self, key: WorkerKey, session: bool = False) -> Worker:
        template, own = self._template(key)
        try:
            worker = Worker(key, template, own, session)
        except BaseException:
            if own:
                template.close()
            raise
        try:
            worker.prepare()
            prime = None if session else self._prime.get(key)
            if prime is not None:
                prime(worker)
        except BaseException:
            worker.close()
            raise
        return worker

    def take(self, key: WorkerKey, prime: Callable[[Worker], None] | None = None) -> Worker:
        """An idle worker for ``key``; if none is left but one is being forked, that one (it is
        ready within milliseconds, sooner than forking another beside it); else one forked now.
        ``prime`` is applied to the workers forked ahead for ``key`` from now on (a run's
        limits set on their groups, off the next run's path)."""
        worker = None
        with self._ready:
            if prime is not None:
                self._prime[key] = prime
            queue = self._idle[key]
            while worker is None:
                while queue and worker is None:
                    candidate = queue.popleft()
                    if candidate.alive():
                        worker = candidate
                    else:
                        candidate.close()
                if worker is not None or key not in self._filling or self._closed:
                    break
                self._ready.wait(1.0)
        self.warm(key)
        return worker or self._new_worker(key)

    def session_worker(self, key: WorkerKey) -> Worker:
        """A worker forked now for a sandbox session (never from the idle ones: it serves many cells)."""
        return self._new_worker(key, session=True)

    def _refill(self, key: WorkerKey) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed or len(self._idle[key]) >= self.size:
                        return
                try:
                    worker = self._new_worker(key)
                except NodeFailedError:
                    return
                with self._ready:
                    if self._closed:
                        worker.close()
                        return
                    self._idle[key].append(worker)
                    self._ready.notify_all()
        finally:
            with self._ready:
                self._filling.discard(key)
                self._ready.notify_all()

    def start(self, key: WorkerKey) -> None:
        """Start ``key``'s template now, then fill its pool in the background: with a template up
        before any run's scratch directory is made, a kernel killed at any moment after has one
        to remove it (see ``Template``; under systemd each worker's template is its own, made
        with the worker)."""
        if cgroup_mode().kind != "systemd":
            self._template(key)
        self.warm(key)

    def warm(self, key: WorkerKey) -> None:
        """Fill the pool for ``key`` in the background (one filler per key at a time)."""
        with self._lock:
            if self.size <= 0 or self._closed or key in self._filling:
                return
            self._filling.add(key)
        threading.Thread(target=self._refill, args=(key,), daemon=True, name="jx-pool-refill").start()

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._idle.values())

    def close(self) -> None:
        with self._ready:
            self._closed = True
            workers = [w for q in self._idle.values() for w in q]
            self._idle.clear()
            self._ready.notify_all()
        for worker in workers:
            worker.close()
        with self._starting:
            templates = list(self._templates.values())
            self._templates.clear()
        for template in templates:
            template.close()


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
    """Kill workers (and everything they started) whose owning kernel is gone. Returns how many.
    Only those of kernels in this pid namespace: seen from a host, a container's kernels have
    pids that are other processes' (or none) here, and their runs are theirs to judge."""
    reaped, here = 0, f"{OWNER_NS_VAR}={pid_namespace()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if here not in environ:
            continue
        owner = next((v[len(OWNER_VAR) + 1 :] for v in environ if v.startswith(OWNER_VAR.encode() + b"=")), None)
        if owner is None or not owner.isdigit() or pid_alive(int(owner)) or not pid_alive(int(entry.name)):
            continue
        kill_tree(int(entry.name))
        reaped += 1
    return reaped
