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

import os
import select
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

from jupyter_exec.backends.base import ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.backends.runs import KILL_GRACE, KillableRun
from jupyter_exec.backends.sessions import SandboxSession
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.monitor import Usage, proc_usage
from jupyter_exec.runner.bootstrap import SESSION_HEADER
from jupyter_exec.runner.protocol import ProtocolReader
from jupyter_exec.spec import RunSpec

from .workers import Worker

__all__ = ["ProcessSession", "SessionCell"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(child) for child in listed.read().split()]
    except OSError:
        return []


class ProcessSession(SandboxSession):
    """A session's worker, its socket and its scratch directory (its files, for every cell)."""

    def __init__(self, name: str, backend: str, spec: RunSpec, worker: Worker, scratch: Path) -> None:
        super().__init__(name, backend, spec)
        self.worker, self.scratch = worker, scratch
        self.link = socket.socket(fileno=os.dup(worker.child.stdin))
        self.process = self._cell_process()
        self.interrupts = 0
        self._ending = threading.Lock()

    def _cell_process(self) -> int:
        """The pid (here) of the process that runs the cells: below its supervisor, which is the
        worker itself or, in a pid namespace, that namespace's init below it."""
        supervisor = self.worker.pid
        if self.worker.key.namespaces:
            supervisor = next(iter(_children(supervisor)), supervisor)
        process = next(iter(_children(supervisor)), None)
        if process is None:
            raise NodeFailedError(f"session {self.name}: its process did not start")
        return process

    def send(self, request: bytes, fds: list[int]) -> None:
        """Hand the session one cell: its request and its stdout, stderr and protocol pipes."""
        self.interrupts = 0
        socket.send_fds(self.link, [len(request).to_bytes(SESSION_HEADER, "big")], fds)
        self.link.sendall(request)

    def interrupt(self) -> None:
        """Stop the running cell (SIGINT: ``KeyboardInterrupt`` in it); a second time, end the session."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.end("interrupted twice")
            return
        try:
            os.kill(self.process, signal.SIGINT)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        return self.ended is None and self.worker.child.wait(timeout=0) is None

    def memory(self) -> int | None:
        cgroup = self.worker.cgroup
        current = cgroup.memory_current() if cgroup else None
        return current or proc_usage(self.worker.tree()).get("memory")

    def usage(self) -> Usage:
        cgroup = self.worker.cgroup
        usage = proc_usage(cgroup.procs() if cgroup else self.worker.tree())
        if cgroup is not None:
            usage["memory"] = max(usage.get("memory") or 0, cgroup.memory_current() or 0)
        return usage

    def end(self, why: str) -> None:
        with self._ending:
            if self.ended is not None:
                return
            self.ended = why
        self.link.close()  # between cells, the session's process ends by itself on this
        self.worker.close(ended=self.running is None)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def exit_status(self) -> int:
        """The wait status of the session's process once it ended, as its supervisor reported it on
        the session's own channel (else as the worker ended)."""
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


class _Unheard:
    """The sink of a session's own channel, which carries no output."""

    def output(self, stream: str, text: str) -> None:
        pass

    def display(self, data: dict[str, str]) -> None:
        pass


class SessionCell(KillableRun):
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
        self.handle.started = time.time()
        self.start_pump()

    def kill(self) -> None:
        self.session.interrupt()

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
        envelope, cgroup = self.reader.envelope, session.worker.cgroup
        oom_killed, peak = bool(cgroup and cgroup.oom_killed()), cgroup.peak_memory() if cgroup else None
        wait_status = 0
        if envelope is None:
            ended = session.worker.child.wait(timeout=KILL_GRACE)
            oom_killed = bool(cgroup and cgroup.oom_killed())
            wait_status = session.exit_status() if ended else signal.SIGKILL
            session.end("its process ended" if ended else "its cell did not stop on an interrupt")
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
        return outcome
