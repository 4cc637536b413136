"""Sandbox sessions on the process backends: one confined worker that serves many cells.

A session's worker is forked from the template as any run's is (its namespaces, its cgroup,
which then bounds the whole session's memory and processes), but its bootstrap serves cells
one after another in one namespace (``bootstrap.serve_session``) until the kernel closes its
socket. Each cell gets pipes of its own, handed over the socket with its request, so its
output, displays and envelope are read exactly as a one-shot run's are, and end when it ends.

An interrupt (cancel, the cell's ``--timeout``) sends SIGINT to the session's process: the
cell ends in ``KeyboardInterrupt`` and the session lives on. A cell that does not stop within
``KILL_GRACE``, a second interrupt, ``%jx end`` or idling end the session: its processes are
killed, its cgroup and its scratch directory removed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from jupyter_exec._proc import pid_alive
from jupyter_exec.backends.base import ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.backends.runs import KILL_GRACE
from jupyter_exec.backends.sessions import SandboxSession, SessionCellRun, death
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.monitor import Usage, proc_usage
from jupyter_exec.runner.bootstrap import SESSION_HEADER, descendants
from jupyter_exec.runner.protocol import ProtocolReader

from .cgroups import RunCgroup, cgroup_mode
from .workers import Worker, kill_tree

__all__ = ["FORKS", "ProcessSession", "SessionCell"]

FORKS = ".forks"  # where in a session's scratch directory its forks' own are


def fork_cgroup(kernel: int, process: int | str) -> str:
    """The name of the group the kernel ``kernel`` makes for a fork (``"*"``: any of its forks'):
    the kernel makes it, not a template, so its templates are told to remove it if it dies."""
    return f"jx-{kernel}-f{process}"


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(child) for child in listed.read().split()]
    except OSError:
        return []


class ProcessSession(SandboxSession):
    """A session's process, its socket and its scratch directory (its files, for every cell).

    A session started by a cell has a worker of its own (``worker``), whose supervisor is a
    subreaper; a fork (``fork``) is a child of its parent's process (re-parented to that
    supervisor if the parent ends first), so it lives within its root session's worker: it ends
    when that ends. It has a
    cgroup of its own where the host makes them (with its parent's limits), else its parent's."""

    def __init__(
        self,
        name: str,
        backend: str,
        first: Submission,
        worker: Worker,
        scratch: Path,
        *,
        link: socket.socket | None = None,
        process: int | None = None,
        cgroup: RunCgroup | None = None,
        parent: ProcessSession | None = None,
    ) -> None:
        super().__init__(name, backend, first.spec, parent.name if parent is not None else None)
        self.first = first  # the first cell's submission: what a fork's confinement is worked out from
        self.worker, self.scratch, self.parent = worker, scratch, parent
        self.link = link or socket.socket(fileno=os.dup(worker.child.stdin))
        self.process = process or self._cell_process()
        self.cgroup = cgroup if parent is not None else worker.cgroup
        self.forks: list[ProcessSession] = []
        self._ending = threading.Lock()

    def _supervisor(self) -> int:
        """The pid (here) of the worker's supervisor: the worker itself or, in a pid namespace,
        that namespace's init below it."""
        supervisor = self.worker.pid
        if self.worker.key.namespaces:
            supervisor = next(iter(_children(supervisor)), supervisor)
        return supervisor

    def _cell_process(self) -> int:
        """The pid (here) of the process that runs the cells: the supervisor's child."""
        process = next(iter(_children(self._supervisor())), None)
        if process is None:
            raise NodeFailedError(f"session {self.name}: its process did not start")
        return process

    def send(self, request: bytes, fds: list[int]) -> None:
        """Hand the session one cell: its request and its stdout, stderr and protocol pipes."""
        socket.send_fds(self.link, [len(request).to_bytes(SESSION_HEADER, "big")], fds)
        self.link.sendall(request)

    def fork(self, name: str, landlock: dict[str, object] | None) -> ProcessSession:
        """Session ``name``, a fork of this one between its cells: its memory copied on write, its
        scratch directory a copy of this one's (inside it, where this session's walls already
        let it write), ``landlock``: the further layer that walls it in there."""
        scratch = self.scratch / FORKS / name
        shutil.copytree(self.scratch, scratch, symlinks=True, ignore=shutil.ignore_patterns(FORKS))
        before = set(_children(self.process))
        theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec = {"cwd": str(scratch), "env": {"HOME": str(scratch), "TMPDIR": str(scratch)}, "landlock": landlock}
        try:
            self.send(json.dumps({"fork": spec}).encode(), [theirs.fileno()])
        finally:
            theirs.close()
        process = _new_child(self.process, before)
        if process is None:
            ours.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise NodeFailedError(f"session {self.name} could not fork")
        cgroup = None
        if self.cgroup is not None and cgroup_mode().kind in ("root", "delegated"):
            cgroup = RunCgroup.create(fork_cgroup(os.getpid(), process))
            limits = self.spec.limits
            cgroup.set_limits(memory=limits.memory, pids=limits.pids, cpus=limits.cpus)
            cgroup.add([process])
        child = ProcessSession(
            name, self.backend, self.first, self.worker, scratch, link=ours, process=process, cgroup=cgroup, parent=self
        )
        self.forks.append(child)
        return child

    def signal_cell(self) -> None:
        try:
            os.kill(self.process, signal.SIGINT)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        if self.ended is not None or self.worker.child.wait(timeout=0) is not None:
            return False
        return self.parent is None or pid_alive(self.process)

    def death(self) -> str:
        oom_killed = bool(self.cgroup and self.cgroup.oom_killed())
        return death(self.exit_status(), oom_killed, self.spec.limits.memory)

    def gone(self, timeout: float) -> bool:
        """Whether the session's process ends within ``timeout`` seconds (it died, or is dying)."""
        if self.parent is None:
            return self.worker.child.wait(timeout=timeout) is not None
        deadline = time.monotonic() + timeout
        while pid_alive(self.process):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _pids(self) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.procs()
        return self.worker.tree() if self.parent is None else [self.process, *descendants(self.process)]

    def memory(self) -> int | None:
        return self.usage().get("memory")

    def usage(self) -> Usage:
        usage = proc_usage(self._pids())
        if self.cgroup is not None:
            usage["memory"] = max(usage.get("memory") or 0, self.cgroup.memory_current() or 0)
        return usage

    def end(self, why: str) -> None:
        with self._ending:
            if self.ended is not None:
                return
            self.ended = why
        for fork in self.forks:
            fork.end(f"its parent session {self.name} ended")
        self.link.close()  # between cells, the session's process ends by itself on this
        if self.parent is None:
            self.worker.close(ended=self.running is None)
        else:
            kill_tree(self.process, wait=0.5 if self.running is None else 0.0)
            if self.cgroup is not None:
                self.cgroup.kill_and_remove()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.ended_now()

    def exit_status(self) -> int:
        """The wait status of the session's process once it ended, as its supervisor reported it on
        the session's own channel (else as the worker ended); a fork's is not reported: a kill."""
        if self.parent is not None:
            return signal.SIGKILL
        reader = ProtocolReader(_Unheard(), trust=False)
        while select.select([self.worker.protocol_fd], [], [], 0)[0]:
            chunk = os.read(self.worker.protocol_fd, 65536)
            if not chunk:
                break
            reader.feed(chunk)
        if reader.exit_status is not None:
            return reader.exit_status
        ended = self.worker.child.wait(timeout=0)
        return ended.status if ended else signal.SIGKILL


def _new_child(parent: int, before: set[int], wait: float = 5.0) -> int | None:
    """The first child of ``parent`` not in ``before`` to appear within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        new = set(_children(parent)) - before
        if new:
            return min(new)
        time.sleep(0.0005)
    return None


class _Unheard:
    """The sink of a session's own channel, which carries no output."""

    def output(self, stream: str, text: str) -> None:
        pass

    def display(self, data: dict[str, str]) -> None:
        pass


class SessionCell(SessionCellRun[ProcessSession]):
    """One cell run in a session: its own pipes, read as a one-shot run's; an interrupt stops it."""

    def __init__(self, submission: Submission, backend: ExecutorBackend, session: ProcessSession) -> None:
        self.submission, self.backend, self.session = submission, backend, session
        self.handle = TaskHandle(submission, backend)
        self.reader = ProtocolReader(submission.sink, submission.spec.trust)
        self.fds: dict[int, str] = {}

    def start(self, request: bytes) -> None:
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
        self.fds = {read: name for (read, _), name in zip(pipes, ("stdout", "stderr", "protocol"), strict=True)}
        try:
            self.session.send(request, [write for _, write in pipes])
        except OSError as error:
            raise NodeFailedError(f"session {self.session.name} is gone: {error}") from error
        finally:
            for _, write in pipes:
                os.close(write)
        self.begun()

    def over(self, streams: dict[int, str]) -> bool:
        """Over once the envelope is in and the session let go of the protocol channel, with
        nothing left to read: something the cell started may still hold its output open."""
        if self.reader.envelope is None or "protocol" in streams.values():
            return False
        return not select.select(list(streams), [], [], 0)[0]

    def release(self) -> None:
        self.backend.forget(self.submission.run_id)
        for fd in self.fds:
            os.close(fd)
        self.fds = {}
        self.session.give_turn()

    def stream_until_exit(self) -> Outcome:
        """Stream the cell until it is over; a cell that did not report ended its session (its
        process died, or it would not stop on an interrupt, which then ends the session)."""
        session = self.session
        self.stream(dict(self.fds))
        envelope, cgroup = self.reader.envelope, session.cgroup
        oom_killed, peak = bool(cgroup and cgroup.oom_killed()), cgroup.peak_memory() if cgroup else None
        wait_status = 0
        if envelope is None:
            ended = session.gone(KILL_GRACE)
            oom_killed = bool(cgroup and cgroup.oom_killed())
            wait_status = session.exit_status() if ended else signal.SIGKILL
            if ended:
                session.die(death(wait_status, oom_killed, session.spec.limits.memory))
            else:
                session.end("its cell did not stop on an interrupt")
        used = envelope.usage if envelope else {}
        outcome = classify(
            run_id=self.submission.run_id,
            limits=self.submission.spec.limits,
            reader=self.reader,
            wait_status=wait_status,
            cancelled=self.cancel_requested,
            timed_out=self.timed_out,
            oom_killed=oom_killed,
            peak_memory=peak or used.get("max_rss"),
            cpu_seconds=session.cell_cpu(used),
            what=f"session {session.name}",
        )
        outcome.details.update(session.cell_details())
        session.take_traffic(outcome)
        return outcome
