"""What backends share to hold sandbox sessions: sandboxes that outlive one cell.

- ``SandboxSession``: one session a backend holds (a confined process, a container): its
  name, the admitted spec of its first cell (whose limits of scope ``session`` are its own),
  its turn (one cell at a time: another waits, saying so), and what it counts (cells, idle).
- ``SessionTable``: a backend's sessions by name: started once per name, listed, ended by
  name or all at once, ended when idle for ``ExecConfig.session_idle``, and found dead (killed
  from outside, out of memory, its container or engine gone) within ``WATCH`` seconds: what
  it held is freed then, and the next cell with its name says in one line why it ended (the
  name then starts a fresh session).
- ``HoldsSessions``: what a backend that holds sessions answers from its table, and how it
  starts a cell in one; ``SessionCellRun``: a cell in a session (an interrupt stops the cell).
"""

from __future__ import annotations

import abc
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from jupyter_exec.errors import JupyterExecError, NodeFailedError
from jupyter_exec.proxy import Gate
from jupyter_exec.runner.protocol import build_request
from jupyter_exec.spec import RunSpec
from jupyter_exec.units import format_size

from .base import Outcome, SessionInfo, Submission, TaskHandle
from .runs import KillableRun, RunRegistry

__all__ = ["WATCH", "HoldsSessions", "SandboxSession", "SessionCellRun", "SessionTable", "death", "later_request"]

WATCH = 2.0  # seconds between looks at the sessions between their cells (dead ones are ended)


def death(wait_status: int, oom_killed: bool, memory: int | None) -> str:
    """Why a session's process ended by itself, as what it did: 'ran out of memory (limit 256 MiB)'."""
    if oom_killed:
        return f"ran out of memory (limit {format_size(memory)})" if memory else "ran out of memory"
    if os.WIFSIGNALED(wait_status):
        return f"was killed ({signal.Signals(os.WTERMSIG(wait_status)).name})"
    return f"ended by itself (exit {os.waitstatus_to_exitcode(wait_status)})"


class SandboxSession(abc.ABC):
    """One sandbox session (see the module docstring); a backend subclasses it."""

    def __init__(self, name: str, backend: str, spec: RunSpec, forked_from: str | None = None) -> None:
        self.name, self.backend, self.spec, self.forked_from = name, backend, spec, forked_from
        self.started = self.used = time.time()
        self.cells = 0
        self.running: int | None = None  # the run id of the cell it runs now
        self.ended: str | None = None  # why it ended, once it has
        self.died = False  # it ended by itself (``die``), not as asked: its next cell says so
        self.cpu_seconds = 0.0  # the CPU time its cells had used when the last one ended
        self.interrupts = 0  # asked of the cell that runs now
        self.on_end: list[Callable[[], None]] = []  # called once it has ended (a broker's quota let go)
        self.gate: Gate | None = None  # its way out to its host list (``--network HOST,...``), for its life
        self._turn = threading.Lock()

    def take_turn(self, run_id: int | None, say: Callable[[str], None]) -> None:
        """Wait for the cell that runs now (saying so), then hold the session for run ``run_id``
        (None: for a fork of it, which is no cell)."""
        if not self._turn.acquire(blocking=False):
            say(f"[jupyter-exec] session {self.name} is running run {self.running}: this cell waits for it\n")
            self._turn.acquire()
        if self.ended is not None:
            self._turn.release()
            raise NodeFailedError(f"session {self.name} ended while this cell waited: {self.ended}")
        self.running, self.interrupts = run_id, 0
        self.cells += run_id is not None

    def give_turn(self) -> None:
        """The cell is over: the next may run."""
        self.running = None
        self.used = time.time()
        self._turn.release()

    def cell_cpu(self, usage: dict[str, Any]) -> float:
        """The CPU seconds of the cell that just ended, from its envelope's ``usage`` (the session
        process's total so far)."""
        total = usage.get("cpu_seconds") or self.cpu_seconds
        used, self.cpu_seconds = max(0.0, total - self.cpu_seconds), total
        return float(used)

    def cell_details(self) -> dict[str, Any]:
        """What a cell's record keeps of its session: its name, the cell's number, why it ended."""
        details: dict[str, Any] = {"session": self.name, "cell": self.cells}
        if self.forked_from is not None:
            details["forked_from"] = self.forked_from
        if self.ended is not None:
            details["session_ended"] = self.ended
        return details

    def info(self) -> SessionInfo:
        return SessionInfo(
            name=self.name,
            backend=self.backend,
            started=self.started,
            idle=0.0 if self.running is not None else time.time() - self.used,
            memory=self.memory(),
            cells=self.cells,
            running=self.running,
            forked_from=self.forked_from,
        )

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether its process or container still runs."""

    @abc.abstractmethod
    def death(self) -> str:
        """Why its process ended by itself (found dead between cells), as ``death`` words it."""

    def die(self, why: str | None = None) -> None:
        """It ended by itself (``why``, else ``death()``): end it, and mark it so for its next cell."""
        if self.ended is None:
            self.died = True
            self.end(why or self.death())

    def interrupt(self) -> None:
        """Stop the running cell (``KeyboardInterrupt`` in it); a second time, end the session."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.end("interrupted twice")
        else:
            self.signal_cell()

    @abc.abstractmethod
    def signal_cell(self) -> None:
        """SIGINT to the process that runs the cells."""

    @abc.abstractmethod
    def memory(self) -> int | None:
        """The memory it holds now (bytes), where known."""

    @abc.abstractmethod
    def end(self, why: str) -> None:
        """End it (its cell too, if one runs) and free what it holds; ``why`` is kept in ``ended``;
        then ``ended_now``. Safe to call more than once, from any thread."""

    def take_traffic(self, outcome: Outcome) -> None:
        """The connections of the cell that just ended through the session's gate, on its outcome."""
        if self.gate is not None:
            traffic = self.gate.take()
            outcome.details["network"], outcome.connections = traffic.summary(), traffic.rows()

    def ended_now(self) -> None:
        """Close its gate and call what waits for its end (once, from ``end``)."""
        if self.gate is not None:
            self.gate.close()
        hooks, self.on_end = self.on_end, []
        for hook in hooks:
            hook()


Session = TypeVar("Session", bound=SandboxSession)


class SessionTable(Generic[Session]):
    """A backend's sessions by name (see the module docstring). ``idle``: seconds a session may
    sit without a cell before it is ended (None: never)."""

    def __init__(self, idle: float | None) -> None:
        self.idle = idle
        self._sessions: dict[str, Session] = {}
        self._gone: dict[str, Session] = {}  # each session that ended by itself or idling, by name
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watching = False

    def get(self, name: str) -> Session | None:
        """Session ``name`` while it lives (one found ended is dropped)."""
        with self._lock:
            session = self._sessions.get(name)
            if session is not None and not self._lives(session):
                session = None
        return session

    def _lives(self, session: Session) -> bool:
        """Whether ``session`` lives; if not, it is ended (``die``) and kept among the gone (with the
        table's lock held)."""
        if session.ended is None and (session.running is not None or session.alive()):
            return True
        session.die()
        self._sessions.pop(session.name, None)
        self._gone[session.name] = session
        return False

    def enter(self, submission: Submission, start: Callable[[], Session]) -> Session:
        """The session a cell runs in (``spec.session``; started by ``start`` if it does not live),
        held for the cell once the one it runs now is over (``give_turn`` gives it back)."""
        name = submission.spec.session
        assert name is not None

        def say(text: str) -> None:
            submission.sink.output("stderr", text)

        session = self.open(name, start, say)
        session.take_turn(submission.run_id, say)
        return session

    def open(self, name: str, start: Callable[[], Session], say: Callable[[str], None] = lambda text: None) -> Session:
        """Session ``name``, started by ``start`` if it does not live; ``say`` tells the user when a
        session of that name ended before (its state is not there any more). One that ended by
        itself is a ``NodeFailedError`` instead, once: the next cell with its name starts afresh."""
        with self._lock:
            session = self._sessions.get(name)
            if session is not None and self._lives(session):
                return session
            last = self._gone.pop(name, None)
            if last is not None and last.died:
                raise NodeFailedError(
                    f"session {name} {last.ended} and ended; run its first cell again to start it afresh"
                )
            session = self._sessions[name] = start()
            if last is not None:
                say(f"[jupyter-exec] session {name} starts afresh: the last one ended ({last.ended})\n")
            if not self._watching:
                self._watching = True
                threading.Thread(target=self._watch, daemon=True, name="jx-sessions").start()
        return session

    def adopt(self, name: str, make: Callable[[], Session]) -> Session:
        """Session ``name``, made by ``make`` (a fork); ``JupyterExecError`` if one lives already."""
        with self._lock:
            living = self._sessions.get(name)
            if living is not None and living.ended is None and living.alive():
                raise JupyterExecError(f"session {name} exists already; %jx end {name} first, or pick another name")
            session = self._sessions[name] = make()
        return session

    def end(self, name: str, why: str = "ended by %jx end") -> bool:
        """End session ``name``; False if there is none."""
        with self._lock:
            session = self._sessions.pop(name, None)
        if session is None:
            return False
        session.end(why)
        self._gone.pop(name, None)  # ended as asked: a new one is no surprise
        return True

    def list(self) -> list[SessionInfo]:
        with self._lock:
            live = [s for s in list(self._sessions.values()) if self._lives(s)]
        return [s.info() for s in live]

    def close(self) -> None:
        """End every session (the kernel is going)."""
        self._closed.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.end("its kernel shut down")

    def _watch(self) -> None:
        """Every ``WATCH`` seconds (a few times per idle period, if shorter): end the sessions found
        dead, and those idle longer than ``idle``."""
        period = min(WATCH, max(0.2, self.idle / 4)) if self.idle else WATCH
        while not self._closed.wait(period):
            now = time.time()
            with self._lock:
                for session in list(self._sessions.values()):
                    self._lives(session)
                idle = [s for s in self._sessions.values() if self.idle and now - s.used >= self.idle]
                idle = [s for s in idle if s.running is None]
                for session in idle:
                    del self._sessions[session.name]
                    self._gone[session.name] = session
            for session in idle:
                session.end(f"idle for {self.idle:g} s (ExecConfig.session_idle)")


class SessionCellRun(KillableRun, Generic[Session]):
    """One cell run in a session: an interrupt (cancel, ``--timeout``) stops the cell, not the session."""

    session: Session

    def kill(self) -> None:
        self.session.interrupt()

    def begun(self) -> None:
        """The cell is handed to its session: its clock and its number there, then its pump."""
        self.handle.started = time.time()
        self.handle.cell = self.session.cells
        self.start_pump()


class HoldsSessions:
    """The session members of a backend's contract, answered from its ``sessions`` table (a
    backend lists this class before ``ExecutorBackend``)."""

    holds_sessions = True
    sessions: SessionTable[Any]
    runs: RunRegistry[Any]

    def session_spec(self, name: str) -> RunSpec | None:
        session = self.sessions.get(name)
        return None if session is None else session.spec

    def list_sessions(self) -> list[SessionInfo]:
        return self.sessions.list()

    def end_session(self, name: str) -> bool:
        return self.sessions.end(name)

    def start_cell(self, cell: SessionCellRun[Any], start: Callable[[], None]) -> TaskHandle:
        """Follow ``cell`` and ``start`` it; if it cannot start, its session is free again."""
        self.runs.add(cell)
        try:
            start()
        except BaseException:
            self.runs.forget(cell.handle.run_id)
            cell.session.give_turn()
            raise
        return cell.handle


def later_request(submission: Submission) -> bytes:
    """A session's later cell's request: its code and values (the session is confined and placed)."""
    spec = submission.spec
    return build_request(
        submission.code, inputs=submission.inputs, outputs=spec.outputs, trust=spec.trust, env={}, cwd=None
    )
