"""``BrokerBackend``: the container backend of a kernel whose container cells run at a broker.

With ``ExecConfig.broker`` (``JX_BROKER``) set, ``backends.factory`` gives this class for
``container`` (and ``docker``, and ``auto``): the kernel then needs no container engine, and
its container runs go to the broker and nowhere else. To the Manager it is a backend like
any other: ``submit`` sends the run and returns once the broker has admitted it (a refusal
by the broker's policy raises here, as a local refusal would); a thread reads the broker's
events into the run's sink (output, displays) and its latest resource sample; the end event
finishes the handle. ``cancel`` is a request of its own; hanging up (a kernel that dies)
makes the broker stop the run. Runtime envs (``--pip``, ``--image``) are built on the
broker's side, so the Manager passes them through (``native_runtime_env``).

Before its first session cell the kernel opens a lifeline to the broker (``op: lifeline``),
held until the kernel goes: when it drops, the broker ends the kernel's sessions there, so a
killed kernel's sessions go within seconds. Should the broker drop it instead (it stopped or
restarted, and its sessions with it), the next cell of each session this kernel had there
says so in one line, and the name then starts a fresh session.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, ClassVar

from jupyter_exec.backends import names
from jupyter_exec.backends.base import Availability, ExecutorBackend, Outcome, SessionInfo, Submission, TaskHandle
from jupyter_exec.backends.container import ContainerBackend, ContainerOptions
from jupyter_exec.backends.container.config import DEFAULT_IMAGE
from jupyter_exec.backends.runs import RunRegistry, TrackedRun
from jupyter_exec.config import ExecConfig, application_config
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.errors import (
    BackendUnavailableError,
    JupyterExecError,
    NodeFailedError,
    SpecError,
    TaskCancelledError,
)
from jupyter_exec.monitor import Usage
from jupyter_exec.policy import Policy
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.status import Status

from .transport import Address, Stream, ask, open_stream
from .wire import BrokerError, Request, RunDoc, outcome_parts, raise_for

__all__ = ["BrokerBackend", "broker_address", "brokered"]

_CANCEL_ASK = 5.0  # seconds a cancel waits for the broker's answer before hanging up instead


def broker_address(config: ExecConfig | None = None) -> str:
    """The broker this kernel uses ('' for none): ``config``'s, else the running application's."""
    return (config or ExecConfig(config=application_config())).broker.strip()


class BrokerBackend(ExecutorBackend):
    """Container runs at the broker (see the module docstring); ``brokered(address)`` makes the
    class for one address, so that class-level questions (``availability``) know it."""

    name: ClassVar[str] = names.CONTAINER
    isolation: ClassVar[str] = "container"
    samples: ClassVar[bool] = True
    native_runtime_env: ClassVar[bool] = True
    #: The broker enforces every limit, and admits each run again under its own policy: the kernel sends
    #: the limits the user asked for as they are, and its defaults apart (``_request``).
    enforced_limits: ClassVar[frozenset[str] | None] = None
    admitted_again: ClassVar[bool] = True
    options_class = ContainerOptions
    holds_sessions: ClassVar[bool] = True  # at the broker, which holds their limits and checks a cell's
    configured: ClassVar[str] = ""  # the address this class was made for

    def __init__(self, config: ExecConfig) -> None:
        super().__init__(config)
        self.address = Address.parse(config.broker or self.configured)
        self.token = config.broker_token
        self.hello: dict[str, Any] = {}
        self.runs: RunRegistry[_BrokeredRun] = RunRegistry()
        self.kernel: str | None = None  # the kernel whose runs (and sessions) these are, from its first run
        self.lifeline: Stream | None = None  # held open while the kernel has sessions at the broker
        self.started: set[str] = set()  # names of the sessions this kernel started at the broker
        self.lost: dict[str, str] = {}  # names of those the broker took with it when it went, and why
        self._lifeline_lock = threading.Lock()

    @classmethod
    def availability(cls) -> Availability:
        """Nothing to probe cheaply: the broker is asked at the kernel's first container run."""
        try:
            parsed = Address.parse(cls.configured or broker_address())
        except BackendUnavailableError as error:
            return Availability(False, error.reason, error.fix)
        return Availability(True, notes=(f"through the broker at {parsed}",))

    @classmethod
    def admit(cls, spec: RunSpec, policy: Policy) -> RunSpec | None:
        """The kernel's own policy as for local containers (the broker applies the administrator's)."""
        return ContainerBackend.admit(spec, policy)

    def initialize(self) -> None:
        """Ask the broker who we are to it: unreachable, or a token it refuses, fails here, once."""
        self.hello = self.ask({"op": "hello"})

    def ask(self, request: Request, timeout: float = 30) -> dict[str, Any]:
        try:
            return ask(self.address, request, self.token, timeout)
        except BrokerError as error:
            if error.status in (401, 403):
                raise BackendUnavailableError(
                    self.name,
                    f"the broker at {self.address} refused this kernel: {error}",
                    "start the server through the hub again (its token may have expired), or ask your administrator",
                ) from None
            raise

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """The broker's answer for its own engine (image digest, runtime, engine), and which broker."""
        placement = spec.placement
        reply = self.ask(
            {
                "op": "identity",
                "image": spec.runtime_env.image if spec.runtime_env else None,
                "runtime": placement.runtime if isinstance(placement, ContainerOptions) else None,
            }
        )
        return {**reply["identity"], "broker": str(self.address)}

    def image(self, env: EnvSpec | None) -> str:
        return (env.image if env else None) or str(self.hello.get("image") or DEFAULT_IMAGE)

    def submit(self, submission: Submission) -> TaskHandle:
        self.kernel = submission.kernel_id
        session = submission.spec.session
        if session is not None:
            self._hold_sessions(session)
        stream = open_stream(self.address, _request(submission, self.config.default_limits()), self.token)
        first = _first(stream, "accepted", "take the run")
        if session is not None:
            self.started.add(session)
        run = self.runs.add(_BrokeredRun(submission, self, stream, int(first["run"])))
        run.start()
        return run.handle

    def _hold_sessions(self, name: str) -> None:
        """Before a cell of session ``name``: the one line for a session the broker took with it when
        it went (the name then starts afresh), and the kernel's lifeline held."""
        why = self.lost.pop(name, None)
        if why is not None:
            raise NodeFailedError(
                f"session {name} ended with the broker at {self.address} ({why}); "
                "run its first cell again to start it afresh"
            )
        with self._lifeline_lock:
            if self.lifeline is None:
                stream = open_stream(self.address, {"op": "lifeline", "kernel": str(self.kernel)}, self.token)
                _first(stream, "reply", "hold this kernel's sessions")
                self.lifeline = stream
                threading.Thread(target=self._watch, args=(stream,), daemon=True, name="jx-broker-lifeline").start()

    def _watch(self, lifeline: Stream) -> None:
        """Read the lifeline's beats until it drops; dropped by the broker, its sessions are gone."""
        while lifeline.next() is not None:
            pass
        with self._lifeline_lock:
            if self.lifeline is not lifeline:
                return  # let go by the kernel itself (shutdown)
            self.lifeline = None
            self.lost.update(dict.fromkeys(self.started, "it stopped or restarted"))
            self.started.clear()
        lifeline.close()

    def cancel(self, handle: TaskHandle) -> bool:
        return self.runs.cancel(handle.run_id)

    def sample(self, handle: TaskHandle) -> Usage | None:
        run = self.runs.get(handle.run_id)
        return run.sample if run is not None else None

    def forget(self, run_id: int) -> None:
        self.runs.forget(run_id)

    def shutdown(self) -> None:
        self.runs.shutdown()
        if self.kernel is not None:  # this kernel's sessions at the broker go with it (at once, not by the lifeline)
            with contextlib.suppress(BrokerError, JupyterExecError, OSError):
                self.ask({"op": "end", "kernel": self.kernel, "session": None}, timeout=5)
        with self._lifeline_lock:
            lifeline, self.lifeline = self.lifeline, None
        if lifeline is not None:
            lifeline.close()

    def list_sessions(self) -> list[SessionInfo]:
        """This kernel's sessions at the broker."""
        if self.kernel is None:
            return []
        return list(self.ask({"op": "sessions", "kernel": self.kernel, "session": None})["sessions"])

    def end_session(self, name: str) -> bool:
        self.started.discard(name)
        self.lost.pop(name, None)
        if self.kernel is None:
            return False
        return bool(self.ask({"op": "end", "kernel": self.kernel, "session": name})["ended"])

    def get_available_resources(self) -> dict[str, Any]:
        reply = self.ask({"op": "resources"})
        return {"broker": str(self.address), **{k: v for k, v in reply.items() if k != "t"}}


@functools.cache
def brokered(address: str) -> type[BrokerBackend]:
    """``BrokerBackend`` for the broker at ``address`` (one class per address)."""
    return type("BrokerBackend", (BrokerBackend,), {"configured": address, "__module__": __name__})


def _first(stream: Stream, kind: str, what: str) -> dict[str, Any]:
    """The broker's first answer on ``stream``, of ``kind``; its error raised (the stream closed) else."""
    first = stream.next()
    if first is None or first.get("t") != kind:
        stream.close()
        if first is None:
            raise NodeFailedError(f"the broker at {stream.address} hung up before it would {what}")
        raise_for(first)
        raise NodeFailedError(f"the broker answered {first.get('t')!r} where it should {what}")
    return first


def _request(submission: Submission, defaults: Limits) -> RunDoc:
    """The run request: the spec as data (the broker checks every field again), the limits the
    user asked for apart from the kernel's ``defaults``."""
    spec = submission.spec
    env = spec.runtime_env
    pip: list[str] = []
    if env is not None:
        if env.working_dir or env.py_modules or any(p.startswith("/") for p in env.pip):
            raise SpecError(
                "--working-dir, --py-modules and local wheels cannot go through the broker: it builds envs on "
                "its side, shared by everyone; publish the package to your index, or send data with --in"
            )
        pip = list(env.pip)
        if env.requirements is not None:
            pip += [
                line.strip()
                for line in env.requirements.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
    if spec.mounts:
        raise SpecError("--mount: the broker runs cells away from your files; send data with --in instead")
    placement = spec.placement
    return {
        "op": "run",
        "code": submission.code,
        "inputs": submission.inputs,
        "outputs": list(spec.outputs),
        "trust": spec.trust,
        "env": dict(spec.env),
        "limits": spec.limits.as_dict(),
        "defaults": defaults.as_dict(),
        "runtime": placement.runtime if isinstance(placement, ContainerOptions) else None,
        "image": env.image if env is not None else None,
        "pip": pip,
        "name": spec.name,
        "kernel": submission.kernel_id,
        "client_run": submission.run_id,
        "session": spec.session,
    }


class _BrokeredRun(TrackedRun):
    """One run at the broker: its stream of events, read on a thread until the end event."""

    def __init__(self, submission: Submission, backend: BrokerBackend, stream: Stream, broker_run: int) -> None:
        self.submission, self.backend, self.stream, self.broker_run = submission, backend, stream, broker_run
        self.handle = TaskHandle(submission, backend)
        self.sample: Usage | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Ask the broker to cancel the run (it then ends it as cancelled); if the broker cannot
        be asked, hang up, which stops the run too."""
        self.cancelled = True
        try:
            self.backend.ask({"op": "cancel", "run": self.broker_run}, timeout=_CANCEL_ASK)
        except (BrokerError, BackendUnavailableError):
            self.stream.close()

    def start(self) -> None:
        threading.Thread(target=self._pump, daemon=True, name=f"jx-broker-{self.submission.run_id}").start()

    def _pump(self) -> None:
        try:
            outcome = self._follow()
        except Exception as error:  # a garbled stream: the run is lost to us, never left unfinished
            outcome = Outcome(Status.FAILED, error=NodeFailedError(f"lost the run at the broker: {error!r}"))
        finally:
            self.stream.close()
            self.backend.forget(self.submission.run_id)
        self.handle.finish(outcome)

    def _follow(self) -> Outcome:
        sink = self.submission.sink
        while (event := self.stream.next()) is not None:
            kind = event.get("t")
            if kind == "out":
                sink.output("stderr" if event.get("s") == "stderr" else "stdout", str(event.get("x", "")))
            elif kind == "display" and isinstance(event.get("data"), dict):
                sink.display(event["data"])
            elif kind == "sample":
                self.sample = {"memory": event.get("memory"), "cpu_seconds": event.get("cpu_seconds")}
            elif kind == "queued":
                sink.output("stderr", f"[jupyter-exec] queued at the broker: {event.get('why')}\n")
            elif kind == "running":
                self.handle.started = float(event.get("started") or self.handle.started)
            elif kind == "end":
                status, envelope, error = outcome_parts(event)
                details = {
                    **event.get("details", {}),
                    "broker": str(self.stream.address),
                    "broker_run": self.broker_run,
                }
                return Outcome(
                    status,
                    envelope=envelope,
                    error=error,
                    exit_code=event.get("exit_code"),
                    peak_memory=event.get("peak_memory"),
                    cpu_seconds=event.get("cpu_seconds"),
                    details=details,
                    connections=event.get("connections"),
                )
        if self.cancelled:
            return Outcome(Status.CANCELLED, error=TaskCancelledError(f"run {self.submission.run_id} was cancelled"))
        return Outcome(
            Status.FAILED,
            error=NodeFailedError(
                f"the broker at {self.stream.address} went away in the middle of the run (it stopped or restarted), "
                "and the run ended with it; run the cell again"
            ),
        )
