"""The kernel-side manager: one per kernel, the single way a cell gets run.

``Manager.run(code, spec)`` takes a run through named steps: ``admitted`` (the backend, and
the spec as ``admission.admit`` lets it run there: defaults, the administrator's policy, what
the backend enforces; a refusal comes before anything is recorded or started), ``record``
(its row, queued), ``_submit`` (its runtime env, the backend's ``Submission``), ``_await``
(its result; an interrupt cancels it), ``_finish`` (its row, whatever happened) and
``_release`` (what it held). It binds nothing itself and returns a ``RunResult``. An
``on_event`` callback, if given, hears the run's life as typed events (``events``):
``created``, ``running``, ``sample`` (about 1/s) and ``finished``; output chunks go to the
sink as always. With ``--cache`` (``RunSpec.cache``) a run identical to one that succeeded
is not run: its stored output is shown again and its values decoded, recorded as
``cached``; a run that succeeds is kept (``cache``). ``Manager.map`` fans one function or
cell out over many items the same way (``map_runs``), recorded as one map run. The Manager
knows backends only through ``backends.base`` and ``backends.factory``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._proc import pid_alive
from .admission import AdmittedSpec, BackendFacts, admit
from .backends import factory
from .backends.base import ExecutorBackend, Outcome, SessionInfo, Submission, TaskHandle
from .cache import CacheEntries, CacheHit, NotCacheable, Recorder, run_key
from .cancel_watch import CancelWatcher
from .config import ExecConfig, application_config, scratch_prefix
from .envs import BuiltEnv, EnvCache, EnvSpec
from .envs.hashing import env_hash
from .errors import (
    BackendUnavailableError,
    JupyterExecError,
    MapError,
    RemoteError,
    TaskError,
    describe_error,
    status_of,
)
from .events import Created, EventCallback, Finished, RunEvent, Running, RunResult
from .map_runs import MapRequest, run_map
from .monitor import Monitor
from .output import ConsoleSink, RunOutput
from .policy import policy_in_effect
from .runner.protocol import Envelope, OutputSink
from .runner.transfer import pack_inputs
from .spec import RunSpec
from .status import Status
from .store.connections import RunConnections
from .store.records import RunRecords
from .store.space import Room
from .timeline import Timeline
from .walls import hint

__all__ = ["EventCallback", "Manager", "RunResult"]


@dataclass
class _Run:
    """One run while the Manager takes it through its steps."""

    id: int
    code: str
    inputs: str | None  # packed
    spec: AdmittedSpec
    backend: ExecutorBackend
    output: RunOutput
    emit: EventCallback
    key: str | None  # in the cache of identical runs (--cache)
    timeline: Timeline
    scratch: Path | None = None
    handle: TaskHandle | None = None
    monitor: Monitor | None = None
    leases: ExitStack = field(default_factory=ExitStack)  # the runtime env it uses


class Manager:
    """Runs cells for one kernel and keeps the record."""

    def __init__(self, config: ExecConfig | None = None, kernel_id: str | None = None) -> None:
        self.config = config or ExecConfig(config=application_config())
        self.policy = policy_in_effect()  # the administrator's; read once per process
        self.kernel_id = kernel_id or f"pid-{os.getpid()}"
        self.records = RunRecords(self.config.store_path)
        self.connections = RunConnections(self.config.store_path)
        self.logs_dir = self.config.logs_dir  # fixed with the store: both live in data_dir
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        # Runs are refused while the disks of their records are (nearly) full.
        self.room = Room([Path(self.config.data_dir), self.records.path.parent], self.records.reserve)
        self.records.reserve.ensure(self.config.min_free_bytes())
        self.scratch_root = Path(self.config.scratch_dir)
        self.scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._backends: dict[str, ExecutorBackend] = {}
        self._facts: dict[str, BackendFacts] = {}
        self.envs = EnvCache(self.config.envs_dir, self.config.store_path, factory.env_builder_for)
        self.cache = CacheEntries(self.config.store_path, self.config.cache_max_bytes())
        self.default_env: EnvSpec | None = None  # %jx env: inherited by every run
        self._active: dict[int, TaskHandle] = {}
        self._starting: set[int] = set()  # recorded, not yet submitted (env being built)
        self._cancel_asked: set[int] = set()  # cancelled while starting: cancelled once submitted
        self._marked: set[int] = set()  # marked running in the store (runs that last)
        self._lock = threading.Lock()
        # Cancel requests from the side panel or other kernels, for runs past a fraction of a second.
        # It also marks running in the store the runs that last (a short run's row is written twice:
        # before it starts, and when it ends).
        self._cancel_watch = CancelWatcher(
            self.records, lambda: (*self._starting, *self._active), self.cancel, lasting=self._mark_lasting
        )
        self.reaped = self.reap()
        atexit.register(self.shutdown)

    def reap(self) -> dict[str, int]:
        """Remove what dead kernels left behind: each backend's leftovers, then unfinished rows."""
        return {**factory.reap_all(), "runs": self.records.close_orphans(pid_alive), "scratch": self._reap_scratch()}

    def _reap_scratch(self) -> int:
        """Remove the scratch directories of kernels that died (a process sandbox's template removes
        them as its kernel dies; this is the second line). How many."""
        owners = {folder: folder.name.split("-", 1)[0] for folder in self.scratch_root.glob(f"{scratch_prefix('*')}*")}
        dead = [folder for folder, owner in owners.items() if owner.isdigit() and not pid_alive(int(owner))]
        for folder in dead:
            shutil.rmtree(folder, ignore_errors=True)
        return len(dead)

    def backend(self, name: str) -> ExecutorBackend:
        """The initialised backend called ``name`` (``auto``: the strongest that works here among
        those the policy allows), made once per kernel; the policy refuses the others before
        they are made."""
        resolved = factory.choose(name if name != "auto" else self.config.backend, self.policy, self.config)
        with self._lock:
            backend = self._backends.get(resolved)
            if backend is None:
                backend = factory.backend_class(resolved, self.config)(self.config)
                self.policy.check_image(backend.image(None))  # not even a pool starts a forbidden image
                backend.bound_by(self.policy)
                backend.initialize()
                self._facts[resolved] = BackendFacts.of(backend)  # what admission needs of it: fixed now
                self._backends[resolved] = backend
        return backend

    def started_backend(self, name: str) -> ExecutorBackend | None:
        """The backend ``name`` if this kernel has started it (nothing is started by asking)."""
        return self._backends.get(name)

    def run(
        self,
        code: str,
        spec: RunSpec,
        *,
        namespace: Mapping[str, Any] | None = None,
        sink: OutputSink | None = None,
        on_event: EventCallback | None = None,
        timeline: Timeline | None = None,
    ) -> RunResult:
        """Run ``code`` as ``spec`` says; raise the ``TaskError`` that ends it otherwise. ``timeline``:
        the run's, if its caller began it (a cell's: from when its magic began)."""
        timeline = timeline or Timeline()
        emit = on_event or _ignore
        started_backends = len(self._backends)
        backend, admitted = self.admitted(spec)
        timeline.mark("admitted", note="backend started" if len(self._backends) > started_backends else None)
        inputs = pack_inputs(admitted.inputs, namespace or {})
        shown = sink or ConsoleSink()
        key = self._cache_key(code, inputs, admitted, backend, shown) if admitted.cache else None
        run_id = self.record(code, admitted, backend, admitted.name)
        timeline.mark("recorded")
        output = RunOutput(run_id, self._log_path(run_id), shown, self.config.output_limit_bytes())
        run = _Run(run_id, code, inputs, admitted, backend, output, emit, key, timeline)
        emit(
            Created(
                kind="created",
                run_id=run_id,
                backend=backend.name,
                isolation=backend.isolation,
                limits=admitted.limits.as_dict(),
                log_path=str(output.log_path),
                name=admitted.name,
                session=admitted.session,
            )
        )
        hit = self.cache.get(key) if key else None
        return self._replay(run, hit) if hit is not None else self._execute(run)

    def admitted(self, spec: RunSpec) -> tuple[ExecutorBackend, AdmittedSpec]:
        """The backend ``spec`` runs on, and the spec as admitted there (``admission``), with the
        kernel's runtime env (``%jx env``) inherited and its default limits; a spec admitted
        already (a map's batch) as it is. A session's later cell that names no backend runs
        where the session lives (a fork made by ``%jx fork`` lives where its parent does)."""
        if spec.session is not None and spec.backend == "auto":
            holder = self._session_holder(spec.session)
            spec = replace(spec, backend=holder.name) if holder is not None else spec
        backend = self.backend(spec.backend)
        if isinstance(spec, AdmittedSpec):
            return backend, spec
        wanted = self.wanted_env(spec)
        if wanted is not spec.runtime_env:
            spec = replace(spec, runtime_env=wanted)
        session = None
        if spec.session is not None:
            if spec.fork is not None and backend.session_spec(spec.session) is None:
                self.fork_session(spec.fork, spec.session)
            if not backend.holds_sessions:
                raise BackendUnavailableError(
                    backend.name,
                    f"--session {spec.session}: the {backend.name} backend keeps no sessions",
                    "use --backend seccomp, local or container",
                )
            session = backend.session_spec(spec.session)
        return backend, admit(spec, self._facts[backend.name], self.policy, self.config.default_limits(), session)

    def _execute(self, run: _Run) -> RunResult:
        """Submit the run and wait for it; its row is finished whatever happens."""
        recorder = Recorder(run.output, self.cache.max_size) if run.key else None
        if run.backend.needs_scratch and run.spec.session is None:  # a session has its own
            prefix = f"{scratch_prefix(os.getpid())}{run.id}-"
            run.scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch_root))
        self._starting.add(run.id)
        self._cancel_watch.run_started()
        try:
            self._submit(run, recorder or run.output)
            envelope = self._await(run)
            trust = run.spec.trust
            result = RunResult(run.id, Status.SUCCEEDED, envelope.decoded_value(trust), envelope.decoded_outputs(trust))
            run.timeline.mark("decoded")
            if run.key and recorder is not None and not recorder.overflow:
                self._keep(run, envelope, recorder)
        except BaseException as error:
            self._finish(run, status_of(error), run.handle.outcome if run.handle else None, error)
            raise
        else:
            self._finish(run, Status.SUCCEEDED, run.handle.outcome if run.handle else None, None)
            return result
        finally:
            self._release(run)

    def _submit(self, run: _Run, sink: OutputSink) -> None:
        """Its runtime env (built or found, and leased), then the backend takes it: running."""
        environment = self._environment(run)
        timeline = run.timeline
        if environment is not None:
            timeline.mark("env_ready")
        run.handle = handle = run.backend.submit(
            Submission(run.id, self.kernel_id, run.code, run.spec, run.inputs, run.scratch, sink, environment, timeline)
        )
        # Where the backend did not mark them: its sandbox was ready, and the cell handed to it,
        # when it made the handle.
        timeline.mark("sandbox_ready", handle.started)
        timeline.mark("started", handle.started)
        with self._lock:
            self._active[run.id] = handle
            cancel_now = run.id in self._cancel_asked
        if cancel_now:
            run.backend.cancel(handle)
        run.emit(Running(kind="running", started=handle.started, cell=handle.cell))

    def _mark_lasting(self, run_ids: frozenset[int]) -> None:
        """Mark running in the store the runs of ``run_ids`` that have been submitted (the cancel
        watcher's look at the runs past a fraction of a second), each once."""
        with self._lock:
            handles = [(run_id, handle) for run_id in run_ids if (handle := self._active.get(run_id)) is not None]
        for run_id, handle in handles:
            if run_id not in self._marked:
                self._marked.add(run_id)
                timeline = handle.submission.timeline
                started = timeline.at("started") if timeline is not None else None
                self.records.mark_running(run_id, str(self._log_path(run_id)), started or handle.started)

    def _await(self, run: _Run) -> Envelope:
        """The run's envelope (or its ``TaskError``); an interrupt cancels the run first. Only runs
        that last are sampled: a short cell never pays for a monitor thread, and a backend that
        cannot tell gets no thread at all."""
        backend, handle = run.backend, run.handle
        assert handle is not None
        try:
            if backend.samples and not handle.wait(_FIRST_SAMPLE):
                run.monitor = Monitor(lambda: backend.sample(handle), run.emit).start()
            return backend.get_result(handle)
        except KeyboardInterrupt:
            backend.cancel(handle)  # in a session: the cell stops, the session lives on
            try:
                handle.wait(10)
            except KeyboardInterrupt:  # a second interrupt: a session's cell ends its session
                backend.cancel(handle)
                handle.wait(10)
            raise

    def _release(self, run: _Run) -> None:
        """What the run held: its env's lease, its place among the active runs, its log, its scratch."""
        run.leases.close()
        self._active.pop(run.id, None)
        self._starting.discard(run.id)
        self._cancel_asked.discard(run.id)
        self._marked.discard(run.id)
        run.output.close()
        if run.scratch is not None:
            try:
                run.scratch.rmdir()  # the usual case (the cell left nothing), and far cheaper than rmtree
            except OSError:
                shutil.rmtree(run.scratch, ignore_errors=True)

    def map(
        self,
        work: Callable[[Any], Any] | str,
        items: list[Any],
        spec: RunSpec,
        how: MapRequest | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """``[work(item) for item in items]`` on ``spec.backend``, results in order, recorded as one
        map run (its details count the items) beside the runs of its batches (on a backend that
        does not fan out itself); see ``map_runs``. Every item runs; then a ``MapError`` carries all
        results and each failed item's error (``return_exceptions``: the errors stand in the list)."""
        run_id, outcome = run_map(self, work, items, spec, how or MapRequest())
        if not outcome.errors:
            return outcome.results
        if return_exceptions:
            return [outcome.errors.get(i, result) for i, result in enumerate(outcome.results)]
        raise MapError(outcome.results, dict(sorted(outcome.errors.items())), run_id)

    def record(self, code: str, spec: RunSpec, backend: ExecutorBackend, name: str | None) -> int:
        """A new row for a run of ``code`` on ``backend``, queued; its id. Refused while the disks
        of the records are (nearly) full, so no record is lost to a full disk."""
        self.room.check(self.config.min_free_bytes())
        return self.records.create_run(
            kernel=self.kernel_id,
            owner_pid=os.getpid(),
            name=name,
            backend=backend.name,
            isolation=backend.isolation,
            spec=spec.describe(),
            code=code,
            code_hash=hashlib.sha256(code.encode()).hexdigest(),
        )

    def _cache_key(
        self, code: str, inputs: str | None, spec: AdmittedSpec, backend: ExecutorBackend, shown: OutputSink
    ) -> str | None:
        """The run's key in the cache of identical runs; None (and why, on stderr) if it has none."""
        try:
            return self.cache_key(code, inputs, spec, backend)
        except NotCacheable as why:
            reason = str(why)
        except Exception as error:  # what the key needs cannot be read now: the run just runs
            reason = f"cannot tell what the run depends on ({type(error).__name__}: {error})"
        shown.output("stderr", f"[jupyter-exec] --cache: not cached: {reason}\n")
        return None

    def cache_key(self, code: str, inputs: str | None, spec: AdmittedSpec, backend: ExecutorBackend) -> str:
        """``run_key`` of an admitted run with its runtime env's hash and the backend's identity;
        ``NotCacheable`` if it cannot be cached."""
        env = None
        if spec.runtime_env is not None:
            builder = backend.env_builder(spec.runtime_env)
            env = env_hash(spec.runtime_env, builder.target if builder else backend.name)
        return run_key(code=code, inputs=inputs, spec=spec, identity=backend.identity(spec), env=env)

    def _replay(self, run: _Run, hit: CacheHit) -> RunResult:
        """A cache hit as this run: the stored output shown (and logged) again, the values decoded;
        nothing runs. Recorded as ``cached``, with the run it came from."""
        output, trust = run.output, run.spec.trust
        run.timeline.mark("started", note="cached")
        try:
            for kind, data in hit.output:
                if kind == "display":
                    output.display(data)
                else:
                    output.output(kind, data)
            envelope = Envelope(value=hit.value, outputs=hit.outputs)
            result = RunResult(run.id, Status.CACHED, envelope.decoded_value(trust), envelope.decoded_outputs(trust))
            run.timeline.mark("decoded")
        except BaseException as error:
            self._finish(run, status_of(error), None, error)
            raise
        self._finish(run, Status.CACHED, Outcome(Status.CACHED, details={"cached_from": hit.run_id}), None)
        return result

    def _keep(self, run: _Run, envelope: Envelope, recorder: Recorder) -> None:
        """Put a succeeded run in the cache (a pickle only from a run with --trust, which its key names)."""
        assert run.key is not None
        try:
            self.cache.put(
                run.key,
                run_id=run.id,
                backend=run.backend.name,
                code=run.code,
                trusted=run.spec.trust,
                output=recorder.chunks,
                value=envelope.value,
                outputs=envelope.outputs,
            )
        except ValueError:  # a pickle the sandbox sent unasked: never kept
            pass

    def wanted_env(self, spec: RunSpec) -> EnvSpec | None:
        """The run's runtime env with the kernel default (``%jx env``) inherited; None if empty."""
        wanted: EnvSpec | None = spec.runtime_env
        if self.default_env is not None:
            wanted = wanted.inherit(self.default_env) if wanted else self.default_env
        return None if wanted is None or wanted.is_empty() else wanted

    def _environment(self, run: _Run) -> BuiltEnv | None:
        """The run's runtime env, built or found in the cache and leased for the run; None for a
        run without one, or on a backend that applies it itself (Ray)."""
        wanted, backend = run.spec.runtime_env, run.backend
        if wanted is None:
            return None
        builder = backend.env_builder(wanted)
        if builder is None:
            if backend.native_runtime_env:
                return None
            raise BackendUnavailableError(
                backend.name,
                "runtime environments (--pip, --working-dir, ...) are not supported by this backend yet",
                "use --backend seccomp",
            )

        def progress(line: str) -> None:
            run.output.shown.output("info", f"[jupyter-exec] {line}\n")

        environment = self.envs.ensure(wanted, builder, progress)
        run.leases.enter_context(self.envs.lease(environment.hash))
        return environment

    def _finish(self, run: _Run, status: Status, outcome: Outcome | None, error: BaseException | None) -> None:
        """The run's row finished as it ended, its log ended with how, and ``finished`` told."""
        monitor = run.monitor
        if monitor is not None:
            monitor.stop()
        if isinstance(error, TaskError):
            error.run_id = run.id
            error.log_path = str(self._log_path(run.id))
        if isinstance(error, RemoteError):
            error.hint = hint(error, run.spec, run.spec.image, self.policy)
        # The backend's peak can miss memory charged before the run's cgroup was joined; samples
        # can miss a short spike: the larger of the two is the better answer.
        peak = (
            max((outcome.peak_memory if outcome else None) or 0, (monitor.peak_memory if monitor else None) or 0)
            or None
        )
        log_cut = run.output.log_cut
        timeline = run.timeline
        handle = run.handle
        if handle is not None and handle.ended is not None:
            timeline.mark("ended", handle.ended)
        if run.output.first_output is not None:
            timeline.mark("first_output", run.output.first_output)
        duration = self.records.finish_run(
            run.id,
            status,
            error=describe_error(error),
            exit_code=outcome.exit_code if outcome else None,
            peak_memory=peak,
            cpu_seconds=outcome.cpu_seconds if outcome else None,
            details={**(outcome.details if outcome else {}), **({"log": log_cut} if log_cut else {})},
            started=timeline.at("started"),
            log_path=str(run.output.log_path),
            timeline=timeline.to_json(),
        )
        if duration is None:  # finished already (a map's batch cancelled with its map): as it was
            duration = (self.records.get(run.id) or {}).get("duration")
        if outcome is not None and outcome.connections:
            self.connections.keep(run.id, outcome.connections)
        run.output.end(status.value, duration, peak, error)
        if run.emit is not _ignore:
            finished = Finished(
                kind="finished",
                status=status,
                error=describe_error(error),
                peak_memory=peak,
                cpu_seconds=outcome.cpu_seconds if outcome else None,
                duration=duration,
                timeline=timeline.as_data(),
            )
            if outcome is not None and "network" in outcome.details:
                finished["network"] = outcome.details["network"]
            run.emit(finished)

    def _log_path(self, run_id: int) -> Path:
        return self.logs_dir / f"{run_id}.log"

    def cancel(self, run_id: int) -> bool:
        """Cancel a run of this kernel that is still going (or still starting: it is
        cancelled as soon as it is submitted)."""
        with self._lock:
            handle = self._active.get(run_id)
            if handle is None and run_id in self._starting:
                self._cancel_asked.add(run_id)
                return True
        return bool(handle and handle.backend.cancel(handle))

    def sessions(self) -> list[SessionInfo]:
        """The sandbox sessions of this kernel, on every backend it started."""
        return [info for backend in list(self._backends.values()) for info in backend.list_sessions()]

    def end_session(self, name: str) -> None:
        """End sandbox session ``name``; ``JupyterExecError`` if this kernel has none of that name."""
        if not any(backend.end_session(name) for backend in list(self._backends.values())):
            known = ", ".join(sorted(info["name"] for info in self.sessions())) or "none"
            raise JupyterExecError(f"no session {name!r} in this kernel (sessions: {known}); %jx sessions lists them")

    def _session_holder(self, name: str) -> ExecutorBackend | None:
        """The started backend that holds live session ``name``, if one does."""
        return next((b for b in list(self._backends.values()) if b.session_spec(name) is not None), None)

    def fork_session(self, parent: str, name: str) -> None:
        """Make sandbox session ``name`` a fork of session ``parent`` (its live state, ``parent``
        untouched), on the backend that holds ``parent``; after the cell ``parent`` runs now."""
        holder = self._session_holder(parent)
        if holder is None:
            known = ", ".join(sorted(info["name"] for info in self.sessions())) or "none"
            raise JupyterExecError(f"no session {parent!r} in this kernel (sessions: {known}); %jx sessions lists them")
        RunSpec(session=name)  # the name is checked as --session's is
        holder.fork_session(parent, name, lambda text: ConsoleSink().output("stderr", text))

    def log_text(self, run_id: int) -> str:
        """Run ``run_id``'s whole log, or a line saying why it has none (nothing printed yet, a map)."""
        row = self.records.get(run_id)
        if row is None:
            raise JupyterExecError(f"no run {run_id}; `%jx runs` lists them")
        path = Path(row["log_path"] or self._log_path(run_id))
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if text:
            return text
        if '"items"' in (row["details"] or ""):
            return f"[jupyter-exec] run {run_id} is a map: its batches have the logs (%jx show {run_id} lists them)\n"
        return f"[jupyter-exec] run {run_id} has printed nothing ({row['status']})\n"

    def shutdown(self) -> None:
        self._cancel_watch.stop()
        for backend in list(self._backends.values()):
            backend.shutdown()
        self._backends.clear()


_FIRST_SAMPLE = 0.3  # seconds a run goes before its resources are sampled


def _ignore(event: RunEvent) -> None:
    """The event callback of a run nobody watches."""
