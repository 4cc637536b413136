"""Sandbox sessions on the container backend: one container that serves many cells.

A session's container is made as a one-shot run's is (the same lock-down, limits, lifeline
and keeper), but its bootstrap is told (``JX_SESSION=1``) to serve cell after cell: it opens
the request FIFO again after each one. The FIFOs of its output and protocol stay open for
the container's life, so a cell is over once its envelope is in and nothing is left to read.
An interrupt (cancel, the cell's ``--timeout``) is SIGINT through the engine to the container's
pid 1, whose supervisor hands it to the process running the cells; a cell that does not stop
within ``KILL_GRACE``, a second interrupt, ``%jx end``, idling or the kernel's end remove the
container (its lifeline first). The memory and pid limits of the container cover the session.

A fork of a container session needs a checkpoint of the running container (CRIU), which
``fork_refusal`` says is missing where it is.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import select
import shutil
import signal
import subprocess
import threading
from typing import Any

from jupyter_exec.backends.base import ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.backends.sessions import SandboxSession, SessionCellRun, death
from jupyter_exec.runner.bootstrap import SESSION_VAR
from jupyter_exec.runner.protocol import ProtocolReader
from jupyter_exec.spec import RunSpec

from .engine import Engine, container_events, oom_event
from .hostconfig import ContainerPlan
from .slot import Slot, gone, stopped
from .stats import Sampler

__all__ = ["ContainerSession", "ContainerSessionCell", "fork_refusal", "session_plan"]

_SAMPLE_AFTER = 0.3  # seconds a cell runs before the container's resources are sampled


@functools.cache
def fork_refusal(engine: str) -> tuple[str, str]:
    """Why a container session cannot be forked on ``engine`` (a description of it), and the fix.

    A fork of a running container is a checkpoint of it restored as a second container, which
    engines do with CRIU (Podman's ``container checkpoint``/``restore``, Docker's experimental
    ``checkpoint``); this backend refuses, naming what is missing here. On a host where CRIU
    works the refusal says that this backend does not drive the engine's checkpoints yet."""
    criu = shutil.which("criu") or next((p for p in ("/usr/sbin/criu", "/sbin/criu") if os.path.exists(p)), None)
    if criu is None:
        why = "CRIU is not installed"
    else:
        try:
            done = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            why = f"`criu check` could not run ({error})"
        else:
            last = (done.stderr or done.stdout).strip().splitlines()
            why = (
                f"`criu check` fails on this kernel ({last[-1] if last else f'exit {done.returncode}'})"
                if done.returncode
                else "jupyter-exec does not drive the engine's checkpoint/restore yet"
            )
    return (
        f"forking a container session needs a checkpoint of the running container (CRIU) on {engine}: {why}",
        "fork on --backend seccomp or local, or run the parent's cells again in a new session",
    )


def session_plan(plan: ContainerPlan) -> ContainerPlan:
    """``plan`` for a session's container: its bootstrap serves many cells."""
    return dataclasses.replace(plan, environment={**plan.environment, SESSION_VAR: "1"})


class ContainerSession(SandboxSession):
    """A session's container (its slot, started and ready)."""

    def __init__(self, name: str, backend: str, spec: RunSpec, slot: Slot, engine: Engine) -> None:
        super().__init__(name, backend, spec)
        self.slot, self.engine = slot, engine
        self.ready = slot.wait_ready()  # what the first cell's reader takes in
        self.memory_seen: int | None = None
        self._ending = threading.Lock()

    def send(self, request: bytes) -> None:
        self.slot.send_request(request)

    def signal_cell(self) -> None:
        """SIGINT through the engine to the container's pid 1, which hands it to the cells' process."""
        try:
            self.engine.retry(lambda: self.slot.container.kill(signal="SIGINT"), "interrupt the cell")
        except Exception as error:
            if not (gone(error) or stopped(error)):
                raise

    def alive(self) -> bool:
        """Its process has not ended: between cells, nothing but its supervisor's last word (or
        the channel's end) can come on the protocol channel."""
        if self.ended is not None:
            return False
        if self.running is not None or not select.select([self.slot.protocol_fd], [], [], 0)[0]:
            return True
        try:
            os.read(self.slot.protocol_fd, 65536)
        except BlockingIOError:
            return True
        return False

    def death(self) -> str:
        """From the engine's log of the container's end (``die``, Podman's ``died``; ``oom`` if its
        memory limit struck), which stays when the container is gone; an engine that does not
        answer (it is restarting, which stops its containers) is said so."""
        try:
            events = container_events(self.engine, self.slot.container.id, self.started)
            seen = {event.get("Action") or event.get("status"): event for event in events}
        except Exception as error:
            return f"lost its container (its engine at {self.engine.url} does not answer: {error})"
        died = seen.get("die") or seen.get("died")
        if died is None:
            return "lost its container (removed, or its engine restarted)"
        said = died.get("Actor", {}).get("Attributes", {})
        code = int(said.get("exitCode") or said.get("containerExitCode") or 0)
        status = (code - 128) if code > 128 else code << 8  # the engine's exit code as a wait status
        return death(status, "oom" in seen, self.spec.limits.memory)

    def memory(self) -> int | None:
        return self.memory_seen

    def end(self, why: str) -> None:
        with self._ending:
            if self.ended is not None:
                return
            self.ended = why
        try:
            self.slot.discard()
        except Exception:  # the engine is away (restarting): its restart stopped the container
            pass
        finally:
            self.ended_now()


class ContainerSessionCell(SessionCellRun[ContainerSession]):
    """One cell in a container session: the session's FIFOs read until its envelope is in."""

    def __init__(self, submission: Submission, backend: ExecutorBackend, session: ContainerSession) -> None:
        self.submission, self.backend, self.session = submission, backend, session
        self.handle = TaskHandle(submission, backend)
        self.reader = ProtocolReader(submission.sink, submission.spec.trust)
        self.sampler = Sampler(session.engine, session.slot.container.id)

    def start(self, request: bytes) -> None:
        if self.session.cells == 1:
            self.reader.feed(self.session.ready)
        self.session.send(request)
        self.begun()

    def over(self, streams: dict[int, str]) -> bool:
        """Over once the envelope (or the supervisor's word that the session's process ended) is
        in and nothing is left to read: the FIFOs stay open for the next cell."""
        if self.reader.envelope is None and self.reader.exit_status is None:
            return False
        return not select.select(list(streams), [], [], 0)[0]

    def release(self) -> None:
        self.sampler.stop()
        self.backend.forget(self.submission.run_id)
        self.session.give_turn()

    def stream_until_exit(self) -> Outcome:
        session, slot = self.session, self.session.slot

        def start_sampling(elapsed: float) -> None:
            if not self.sampler.started and elapsed > _SAMPLE_AFTER:
                self.sampler.start()

        self.stream({slot.protocol_fd: "protocol", slot.stdout_fd: "stdout", slot.stderr_fd: "stderr"}, start_sampling)
        envelope, limits = self.reader.envelope, self.submission.spec.limits
        wait_status, oom_killed = 0, False
        if envelope is None:  # the session's process ended, or the cell would not stop on an interrupt
            wait_status = self.reader.exit_status if self.reader.exit_status is not None else signal.SIGKILL
            oom_killed = oom_event(session.engine, slot.container.id, limits, self.handle.started, wait_status)
            if self.reader.exit_status is not None or not session.slot.alive():
                session.die(death(wait_status, oom_killed, limits.memory) if wait_status else None)
            else:
                session.end("its cell did not stop on an interrupt")
        used: dict[str, Any] = envelope.usage if envelope else {}
        peaks = [p for p in (self.sampler.peak_memory, used.get("max_rss")) if p]
        if peaks:
            session.memory_seen = max(peaks)
        outcome = classify(
            run_id=self.submission.run_id,
            limits=limits,
            reader=self.reader,
            wait_status=wait_status,
            cancelled=self.cancel_requested,
            timed_out=self.timed_out,
            oom_killed=oom_killed,
            peak_memory=max(peaks) if peaks else None,
            cpu_seconds=session.cell_cpu(used),
            what=f"session {session.name}",
        )
        outcome.details.update({**session.cell_details(), "container": slot.container.id[:12]})
        session.take_traffic(outcome)
        return outcome
