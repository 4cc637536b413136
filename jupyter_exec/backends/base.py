"""The backend contract every target (local, seccomp, container, ray) implements.

A backend takes a ``Submission`` (one run, fully described) and returns a ``TaskHandle``
at once; the run goes on in the background, streaming output to the submission's sink.
``get_result`` waits for it and returns the raw ``Envelope`` or raises the ``TaskError``
that says how it ended. Backends never import IPython.

What callers would otherwise special-case is part of the contract: ``options_class``
(the backend's typed ``Placement``), ``enforced_limits`` and ``admitted_again``
(which limits it keeps, and whose defaults apply), ``admit`` (its own ceilings in the
administrator's policy), ``reap`` (what dead kernels left behind) and capability flags
(``samples``, ``needs_scratch``, ``native_runtime_env``, ``fans_out``).

This module is the contract only: the machinery the backends share to follow their runs
(the run registry, the kill-able read loop) is ``runs``'s. It imports nothing above it.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from jupyter_exec.config import ExecConfig
from jupyter_exec.envs.builder import BuiltEnv, EnvBuilder
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.errors import BackendUnavailableError, TaskError, TransferError, described_error
from jupyter_exec.limits import LIMITS
from jupyter_exec.monitor import Usage
from jupyter_exec.policy import Policy
from jupyter_exec.runner.protocol import Envelope, OutputSink
from jupyter_exec.spec import Limits, Placement, RunSpec
from jupyter_exec.status import Status
from jupyter_exec.timeline import Timeline

__all__ = ["Availability", "ExecutorBackend", "MapOutcome", "Outcome", "SessionInfo", "Submission", "TaskHandle"]


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here; if not, why and what to do."""

    ok: bool
    reason: str = ""
    fix: str = ""
    notes: tuple[str, ...] = ()


class SessionInfo(TypedDict):
    """One sandbox session, as ``%jx sessions`` lists it."""

    name: str
    backend: str
    started: float  # epoch seconds
    idle: float  # seconds since its last cell ended (0 while one runs)
    memory: int | None  # bytes it holds now, where known
    cells: int  # cells run in it so far
    running: int | None  # the run id of the cell it runs now
    forked_from: str | None  # the session it is a fork of


@dataclass
class Submission:
    """One run, as a backend needs it."""

    run_id: int
    kernel_id: str
    code: str
    spec: RunSpec
    inputs: str | None  # packed by runner.transfer.pack_inputs
    scratch: Path | None  # the run's own host directory (backends with needs_scratch), removed after
    sink: OutputSink
    environment: BuiltEnv | None = None  # a built runtime env (its python, sys.path additions)
    timeline: Timeline | None = None  # the run's marks: a backend adds its own (sandbox_ready, ray_started)
    stop: threading.Event | None = None  # set to cancel it before it has started (a session being made stops)


@dataclass
class Outcome:
    """How a run ended, as recorded in the store."""

    status: Status
    envelope: Envelope | None = None
    error: TaskError | None = None
    exit_code: int | None = None
    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    connections: list[dict[str, Any]] | None = None  # a host-list run's, as its proxy saw them (Connection.as_dict)


@dataclass
class MapOutcome:
    """What a map brought back: ``results`` in the items' order (None where an item failed)
    and ``errors`` by item index, each the error the item raised in the sandbox.
    ``settled(index)`` is called as each item's result or error comes in."""

    results: list[Any]
    errors: dict[int, BaseException] = field(default_factory=dict)
    settled: Callable[[int], None] | None = None

    def succeed(self, index: int, result: Any) -> None:
        self.results[index] = result
        if self.settled is not None:
            self.settled(index)

    def fail(self, index: int, error: BaseException) -> None:
        self.errors[index] = error
        if self.settled is not None:
            self.settled(index)

    def failed_among(self, start: int, count: int) -> int:
        """How many of the ``count`` items from ``start`` failed."""
        return sum(1 for index in range(start, start + count) if index in self.errors)

    def add(self, start: int, batch: dict[str, Any], decode: Callable[[Any], Any], run_id: int | None) -> None:
        """Take in one batch as ``bootstrap.apply_batch`` reports it (items from ``start``, run
        ``run_id``)."""
        failed = batch.get("errors") or {}
        for offset, encoded in enumerate(batch["results"]):
            index = start + offset
            described = failed.get(str(index))
            if described is None:
                try:
                    self.succeed(index, decode(encoded))
                except TransferError as error:
                    self.fail(index, error)
            elif described["type"] == "TransferError":
                self.fail(
                    index,
                    TransferError(
                        f"{described['message']}, which cannot come back as data; "
                        "return data, or pass trust=True to pickle it (only for code you trust)"
                    ),
                )
            else:
                self.fail(index, described_error(described, run_id=run_id))


class TaskHandle:
    """A submitted run. Finished exactly once, by the backend."""

    def __init__(self, submission: Submission, backend: ExecutorBackend) -> None:
        self.submission = submission
        self.backend = backend
        self.started = time.time()
        self.cell: int | None = None  # its number among its session's cells (a backend holding sessions)
        self.outcome: Outcome | None = None
        self.ended: float | None = None  # epoch seconds: when the backend had the outcome
        self._done = threading.Event()

    @property
    def run_id(self) -> int:
        return self.submission.run_id

    def done(self) -> bool:
        return self._done.is_set()

    def mark(self, name: str, at: float | None = None, note: str | None = None) -> None:
        """Mark ``name`` (now, or ``at``) in the run's timeline (``sandbox_ready``: with how the sandbox was had)."""
        if self.submission.timeline is not None:
            self.submission.timeline.mark(name, at, note)

    def finish(self, outcome: Outcome) -> None:
        if not self._done.is_set():
            self.outcome = outcome
            self.ended = time.time()
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait in short slices so a KeyboardInterrupt reaches the waiting thread promptly."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._done.wait(remaining)
        return True


class ExecutorBackend(abc.ABC):
    """One way of running a cell. Each is registered by name in ``factory``."""

    name: ClassVar[str]  # one of ``names.NAMES``
    isolation: ClassVar[str]  # none | subprocess | seccomp | container | ray
    #: The ``Limits`` fields this backend enforces (None: all). The kernel's defaults are merged
    #: for these only, and a ceiling of the policy lowers them; an explicit limit outside the set
    #: is refused, never ignored (a Ray task gets the default timeout, not the sandbox's pids).
    enforced_limits: ClassVar[frozenset[str] | None] = None
    #: The backend's own options (``RunSpec.placement``); None: it takes none.
    options_class: ClassVar[type[Placement] | None] = None

    #: Capability: ``sample`` reports a running run's resources (a monitor is worth starting).
    samples: ClassVar[bool] = False
    #: Capability: runs need a private host directory (``Submission.scratch``); containers and
    #: Ray tasks have their own, so they skip the cost of making and removing one.
    needs_scratch: ClassVar[bool] = False
    #: Capability: the backend applies ``RunSpec.runtime_env`` itself (Ray's own runtime_env).
    native_runtime_env: ClassVar[bool] = False
    #: Capability: ``map`` fans work out over many items itself.
    fans_out: ClassVar[bool] = False
    #: Capability: where runs go (a broker) admits them again under its own policy: the kernel
    #: sends the limits asked for as they are (checked against its own policy, never lowered),
    #: merges none of its default limits in (they travel apart) and lowers none to a ceiling.
    #: True for the broker's client, whose broker enforces every limit (``enforced_limits``: all).
    admitted_again: ClassVar[bool] = False
    #: Capability: runs with ``RunSpec.session`` go to a sandbox session that outlives the cell
    #: (``session_spec``, ``list_sessions``, ``end_session``).
    holds_sessions: ClassVar[bool] = False

    def __init__(self, config: ExecConfig) -> None:
        self.config = config

    @classmethod
    @abc.abstractmethod
    def availability(cls) -> Availability:
        """Cheap check that this backend can run here (used by ``doctor`` and ``auto``)."""

    @classmethod
    def reap(cls) -> int:
        """Remove what kernels that died left behind (processes, containers); how many."""
        return 0

    @classmethod
    def admit(cls, spec: RunSpec, policy: Policy) -> RunSpec | None:
        """Refuse (``PolicyError``) what this backend's own options ask beyond the policy,
        before anything connects or starts; return the spec with what the policy forces on
        those options (a container runtime), or None when it forces nothing. Limits are
        admitted for all backends alike (``admission``)."""
        return None

    def refusal(self, limits: Limits, unenforced: tuple[str, ...]) -> tuple[str, str]:
        """What the user is told when a run asks for limits this backend does not enforce
        (``unenforced``: fields of ``limits`` outside ``enforced_limits``): why, and the fix.
        Admission decides that the run is refused; the backend only says why."""
        flags = ", ".join(f"{LIMITS[name].flag} {LIMITS[name].show(getattr(limits, name))}" for name in unenforced)
        return f"{flags}: the {self.name} backend cannot enforce it", "drop it, or use --backend container"

    def bound_by(self, policy: Policy) -> None:
        """Bound the backend's own settings by the administrator's policy (a warm pool's size);
        called once, before ``initialize``."""

    def initialize(self) -> None:
        """Start what the backend needs (pools, connections). Called once before use."""

    @abc.abstractmethod
    def submit(self, submission: Submission) -> TaskHandle:
        """Start the run and return at once."""

    @abc.abstractmethod
    def cancel(self, handle: TaskHandle) -> bool:
        """Stop the run; True if it was still running."""

    def forget(self, run_id: int) -> None:
        """Drop run ``run_id`` from what the backend follows (``sample``, ``cancel``, ``shutdown``
        find no more of it); called once the run is over, or if it never started. Its handle
        stays as it was. A backend that follows nothing has nothing to drop."""

    def get_result(self, handle: TaskHandle, timeout: float | None = None) -> Envelope:
        """The run's envelope, or its ``TaskError``."""
        if not handle.wait(timeout):
            raise TimeoutError(f"run {handle.run_id} still running after {timeout} s")
        assert handle.outcome is not None
        if handle.outcome.error is not None:
            raise handle.outcome.error
        assert handle.outcome.envelope is not None
        return handle.outcome.envelope

    def wait(
        self, handles: Iterable[TaskHandle], timeout: float | None = None
    ) -> tuple[list[TaskHandle], list[TaskHandle]]:
        """Split ``handles`` into (done, pending), waiting until one is done or ``timeout``."""
        handles = list(handles)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done, [h for h in handles if not h.done()]
            time.sleep(0.01)

    def map(
        self,
        work: Any,
        items: list[Any],
        spec: RunSpec,
        *,
        run_id: int | None = None,
        batch_size: int | None = None,
        max_parallel: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> MapOutcome:
        """``work`` over ``items``, results in order, errors per item (backends with ``fans_out``)."""
        raise NotImplementedError(f"{self.name} does not fan out")

    def shutdown(self) -> None:
        """Cancel the runs still going and wait for them to end (at most ``runs.SHUTDOWN_WAIT``
        seconds in all, so each is recorded ``cancelled``), then release what ``initialize``
        started."""

    def get_available_resources(self) -> dict[str, Any]:
        return {}

    def sample(self, handle: TaskHandle) -> Usage | None:
        """What the run uses now: ``memory`` (bytes), ``cpu_seconds`` so far, and ``gpu`` (%)
        / ``gpu_memory`` (bytes) where known; None when this backend cannot tell (``samples``)."""
        return None

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """What decides a run's result here besides its code, inputs and spec, for the cache of
        identical runs (``--cache``): the Python build, the image's digest, the runtime."""
        return {"backend": self.name, "isolation": self.isolation}

    def env_builder(self, env: EnvSpec | None = None) -> EnvBuilder | None:
        """What builds runtime envs (``env``, if known) for this backend; None if it cannot use them."""
        return None

    def image(self, env: EnvSpec | None) -> str | None:
        """The image a run with this runtime env starts from (an env's own image is built
        on it), for the administrator's allow-list; None for a backend that runs no images."""
        return None

    def session_spec(self, name: str) -> RunSpec | None:
        """The admitted spec of the first cell of session ``name`` while it lives (its limits are
        the session's), else None."""
        return None

    def list_sessions(self) -> list[SessionInfo]:
        """The sessions this backend holds now."""
        return []

    def end_session(self, name: str) -> bool:
        """End session ``name`` and free what it holds (its cell, if one runs, is cancelled);
        False if there is no such session."""
        return False

    def fork_session(self, parent: str, name: str, say: Callable[[str], None]) -> None:
        """Make session ``name`` a copy of session ``parent``'s live state (its globals and files),
        ``parent`` untouched; waits for the cell ``parent`` runs now (``say`` tells the user so).
        ``JupyterExecError`` for an unknown ``parent`` or a living ``name``;
        ``BackendUnavailableError`` where this backend cannot fork a session (and what is missing)."""
        raise BackendUnavailableError(
            self.name, f"the {self.name} backend cannot fork a session", "use --backend seccomp or local"
        )
