"""One run at the broker: admit it under the user's policy, hold it for room, run it in the user's
container backend, stream its events, and record and audit how it ended.

Admission is ``admission.admit``, as in a kernel, under the broker's own files: the request's
limits are the ones the user asked for (refused above a ceiling), over the kernel's defaults
and then the broker's (lowered to the ceilings), so nothing a kernel sets can loosen the
administrator's policy. The
client learns its run's number at once (``accepted``); a run that must wait for room says why
(``queued``). Output and displays go to the client as events and to the run's log (kept by the
broker, capped), so ``logs`` can replay them. A client that hangs up, or asks ``cancel``, stops
the run: its container is killed and removed, whatever state it was in.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from jupyter_exec.admission import AdmittedSpec, BackendFacts, admit
from jupyter_exec.backends.base import Outcome, Submission, TaskHandle
from jupyter_exec.backends.broker import wire
from jupyter_exec.backends.broker.wire import BrokerError, RunRequest
from jupyter_exec.backends.container import ContainerBackend, ContainerOptions
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.errors import SpecError, TaskCancelledError
from jupyter_exec.policy import Policy
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.status import Status

from .kernels import in_kernels_words, scoped
from .quotas import Ticket
from .rules import Capacity, Quotas
from .service import Broker, Channel, Identity, Live

__all__ = ["serve_run"]

_SAMPLE_EVERY = 0.5  # seconds between resource samples sent to the client
MAX_CODE = 1 << 20  # characters of a cell's code


class _ChannelSink:
    """A run's output: to the client as events (while it listens) and to the broker's log of the run."""

    def __init__(self, channel: Channel, log: Path, most: int, words: Callable[[str], str]) -> None:
        self.channel, self.most, self.written, self.words = channel, most, 0, words
        self.path = log
        self.log: BinaryIO | None = None  # opened at the first output: most cells print nothing
        self.lock = threading.Lock()
        self.hung_up = False

    def send(self, event: wire.Event) -> None:
        with self.lock:
            if self.hung_up:
                return
            try:
                self.channel.send(event)
            except OSError:
                self.hung_up = True

    def _keep(self, text: str) -> None:
        data = text.encode(errors="replace")[: max(0, self.most - self.written)]
        if data:
            if self.log is None:
                self.log = open(self.path, "ab")
            self.log.write(data)
            self.log.flush()
            self.written += len(data)

    def output(self, stream: str, text: str) -> None:
        if stream == "stderr":  # where a session's notes go ('session NAME is running run 12: ...')
            text = self.words(text)
        self._keep(text)
        self.send({"t": "out", "s": stream, "x": text})

    def display(self, bundle: dict[str, str]) -> None:
        self._keep(str(bundle.get("text/plain", "")) + "\n")
        self.send({"t": "display", "data": bundle})

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _admit(
    broker: Broker, request: RunRequest, policy: Policy, backend: ContainerBackend, defaults: Limits
) -> AdmittedSpec:
    """The run's spec as admitted under ``policy`` (``admission``), with the kernel's ``defaults`` over
    the broker's: ``PolicyError`` for what it refuses (nothing is recorded then)."""
    session = scoped(request.kernel, request.session) if request.session else None
    spec = RunSpec(
        backend="container",
        session=session,
        limits=request.limits,
        outputs=request.outputs,
        env=dict(request.env),
        trust=request.trust,
        name=request.name,
        placement=ContainerOptions.parse(request.runtime),
        runtime_env=EnvSpec(pip=request.pip, image=request.image) if request.pip or request.image else None,
    )
    living = backend.session_spec(session) if session else None
    defaults = defaults.merged_over(broker.config.default_limits())
    try:
        return admit(spec, BackendFacts.of(backend), policy, defaults, living)
    except SpecError as error:
        if session is None or type(error) is not SpecError:
            raise
        # a session's limits refused: named as the kernel names the session
        raise SpecError(in_kernels_words(str(error), request.kernel, request.session)) from None


def _gpus_held(limits: Limits, capacity: Capacity, quotas: Quotas) -> int:
    """The GPUs a run holds while it runs: ``all`` is every GPU of the machine (its capacity). A
    machine whose GPUs the policy does not count cannot count ``all``: refused where a GPU quota
    applies, and counted as none where nothing counts GPUs."""
    asked = limits.gpus.count(capacity.gpus) if limits.gpus is not None else 0.0
    if asked != math.inf:
        return int(asked)
    if quotas.gpus is not None:
        why = f"--gpus all is more than your GPU quota ({quotas.gpus}); ask for a count, e.g. --gpus 1"
        raise BrokerError(403, why, "PolicyError")
    return 0


def serve_run(broker: Broker, identity: Identity, doc: dict[str, Any], channel: Channel) -> None:
    """Serve one run request on ``channel`` (see the module docstring); refusals raise, as for any op."""
    request = wire.parse_run(doc, MAX_CODE)
    defaults = wire.parse_defaults(doc.get("defaults"))
    policy, quotas = broker.rules.for_user(identity.user, identity.groups)
    with broker.sandboxes.backend(identity.user, policy) as backend:
        spec = _admit(broker, request, policy, backend, defaults)
        runtime = spec.placement.runtime if isinstance(spec.placement, ContainerOptions) else None
        image = spec.image
        assert image is not None  # a container starts from an image, always
        facts: dict[str, Any] = {
            "image": image,
            "runtime": runtime or backend.settings.runtime or None,
            "limits": spec.limits.as_dict(),
            "code_hash": hashlib.sha256(request.code.encode()).hexdigest(),
        }
        gpus = _gpus_held(spec.limits, broker.scheduler.capacity, quotas)
        joining = spec.session is not None and backend.session_spec(spec.session) is not None
        # A session's memory and GPUs are held by its first cell's ticket while it lives: a later cell holds none.
        ticket = Ticket(identity.user, 0 if joining else spec.limits.memory or 0, 0 if joining else gpus, quotas)
        why = broker.scheduler.enter(ticket)  # a run that may not even wait is refused here
        run_id = broker.records.create(
            user=identity.user,
            kernel=request.kernel,
            client_run=request.client_run,
            spec=spec,
            image=image,
            runtime=facts["runtime"],
            code_hash=facts["code_hash"],
        )
        run = _Run(broker, identity, request, spec, ticket, channel, run_id, facts)
        run.starts_session = spec.session is not None and not joining
        run.serve(backend, why)


class _Run:
    """The life of one admitted run (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        identity: Identity,
        request: RunRequest,
        spec: RunSpec,
        ticket: Ticket,
        channel: Channel,
        run_id: int,
        facts: dict[str, Any],
    ) -> None:
        self.broker, self.identity, self.request, self.spec, self.ticket = broker, identity, request, spec, ticket
        self.channel, self.run_id, self.facts = channel, run_id, facts
        self.live = Live(identity.user, request.kernel)
        self.words = functools.partial(in_kernels_words, kernel=request.kernel, name=request.session)
        self.sink = _ChannelSink(channel, broker.logs_dir / f"{run_id}.log", broker.settings.log_max_bytes, self.words)
        self.backend: ContainerBackend | None = None
        self.starts_session = False  # its ticket is its session's while that lives

    def serve(self, backend: ContainerBackend, why: str | None) -> None:
        broker = self.broker
        self.backend = backend
        with broker.live_lock:
            broker.live[self.run_id] = self.live
        granted = why is None
        outcome: Outcome | None = None
        try:
            self.sink.send({"t": "accepted", "run": self.run_id})
            if why is not None:
                self.sink.send({"t": "queued", "why": why})
                granted = self._wait_for_room()
            if granted and not self._stopping():
                outcome = self._execute(backend)
        except Exception as error:  # an engine failure, an image missing: the run fails, the broker goes on
            failure = wire.failure(error)
            outcome = Outcome(failure.status, error=failure)
        finally:
            if granted and not self._held_by_session(backend):
                broker.scheduler.leave(self.ticket)
            with broker.live_lock:
                broker.live.pop(self.run_id, None)
            self._finish(outcome or _cancelled(self.run_id))

    def _held_by_session(self, backend: ContainerBackend) -> bool:
        """Whether the run started a session that lives on: its ticket (its memory in the user's
        quota) is then let go when the session ends, not now."""
        name = self.spec.session
        session = backend.sessions.get(name) if name and self.starts_session else None
        if session is None:
            return False
        session.on_end.append(lambda: self.broker.scheduler.leave(self.ticket))
        return True

    def _stopping(self) -> bool:
        return self.live.cancel.is_set() or self.sink.hung_up or self.channel.gone()

    def _wait_for_room(self) -> bool:
        """Wait for the ticket (True), or for a cancel or hang-up meanwhile (False: it left the queue)."""
        while not self.ticket.granted.wait(0.2):
            if self._stopping() and self.broker.scheduler.withdraw(self.ticket):
                return False
        return True

    def _execute(self, backend: ContainerBackend) -> Outcome:
        broker, spec = self.broker, self.spec
        with ExitStack() as leases:
            environment = None
            if spec.runtime_env is not None:  # --pip, --image: the broker builds or finds it
                environment = broker.sandboxes.environment(
                    backend, spec.runtime_env, lambda line: self.sink.output("stderr", f"[jupyter-exec] {line}\n")
                )
                leases.enter_context(broker.sandboxes.lease(environment))
            submission = Submission(
                self.run_id,
                f"broker-{self.identity.user}",
                self.request.code,
                spec,
                self.request.inputs,
                None,
                self.sink,
                environment,
                stop=self.live.cancel,  # a session being made stops being made (its kernel went, a cancel)
            )
            handle = backend.submit(submission)
            self.live.stop = lambda: backend.cancel(handle)
            if (
                spec.session
                and self.starts_session
                and not broker.lifelines.held(self.identity.user, self.request.kernel)
            ):
                # Its kernel's last lifeline dropped while the session was made (an env build is
                # long), so the lifeline's end found none to end: it ends here, as it would have there.
                backend.sessions.end(spec.session, "its kernel went (its lifeline to the broker dropped)")
            broker.records.mark_running(self.run_id, str(self.sink.path))
            self.sink.send({"t": "running", "started": handle.started})
            if self._stopping():
                backend.cancel(handle)
            self._follow(backend, handle)
        assert handle.outcome is not None
        return handle.outcome

    def _follow(self, backend: ContainerBackend, handle: TaskHandle) -> None:
        """Until the run ends: samples to the client; a hang-up or cancel stops the run."""
        stopped = False
        while not handle.wait(_SAMPLE_EVERY):
            if not stopped and self._stopping():
                backend.cancel(handle)
                stopped = True
            sample = backend.sample(handle)
            if sample:
                self.sink.send(
                    {"t": "sample", "memory": sample.get("memory"), "cpu_seconds": sample.get("cpu_seconds")}
                )

    def _finish(self, outcome: Outcome) -> None:
        broker = self.broker
        error = outcome.error
        if error is not None and error.args:  # named as the kernel names its session
            error.args = (self.words(str(error.args[0])), *error.args[1:])
        row = broker.records.finish(self.run_id, outcome)
        if outcome.connections:
            broker.connections.keep(self.run_id, outcome.connections)
        self.sink.send(
            wire.end_event(
                outcome.status,
                outcome.envelope,
                error,
                exit_code=outcome.exit_code,
                peak_memory=outcome.peak_memory,
                cpu_seconds=outcome.cpu_seconds,
                details={
                    k: v for k, v in outcome.details.items() if k in ("runtime", "limits", "resources", "network")
                },
                connections=outcome.connections,
            )
        )
        # the client has its answer: the audit line (and the image's digest, asked at most every
        # 30 s) is off its path
        broker.audit.write(
            op="run",
            user=self.identity.user,
            via=self.identity.via,
            decision="ran",
            run=self.run_id,
            status=outcome.status,
            reason=str(error) if error else None,
            digest=self._digest(),
            duration=(row or {}).get("duration"),
            peak_memory=outcome.peak_memory,
            **self.facts,
        )
        self.sink.close()

    def _digest(self) -> str | None:
        return self.broker.sandboxes.digest(self.backend, self.facts["image"]) if self.backend else None


def _cancelled(run_id: int) -> Outcome:
    return Outcome(Status.CANCELLED, error=TaskCancelledError(f"run {run_id} was cancelled before it started"))
