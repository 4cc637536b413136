"""The kernel-side manager: one per kernel, the single way a cell gets run.

``Manager.run(code, spec)`` picks the backend, applies the default limits and the
administrator's policy (``policy.py``, and the backend's own ``admit``: a refusal comes
before anything is recorded or started), records the run, hands the backend a
``Submission``, waits (an interrupt cancels the run), binds nothing itself and returns a
``RunResult``. The row in the store is finished whatever happens. An ``on_event``
callback, if given, hears the run's life as plain dicts: ``created`` (id, backend,
limits, log path), ``running``, ``sample`` (resources, about 1/s) and ``finished``
(status, duration, error, peak memory); output chunks go to the sink as always. With
``--cache`` (``RunSpec.cache``) a run identical to one that succeeded is not run: its
stored output is shown again and its values decoded, recorded as ``cached``; a run that
succeeds is kept (``cache``). ``Manager.map`` fans one function or cell out over many
items the same way (``fanout``), recorded as one map run. The Manager knows backends only
through ``backends.base`` and ``backends.factory``.
"""

from __future__ import annotations

import atexit
import functools
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
from .backends import factory
from .backends.base import ExecutorBackend, Outcome, Submission, TaskHandle
from .cache import CacheHit, NotCacheable, Recorder, RunCache, run_key
from .cancel_watch import CancelWatcher
from .config import ExecConfig, application_config
from .envs import BuiltEnv, EnvCache, EnvSpec
from .envs.hashing import env_hash
from .errors import (
    BackendUnavailableError,
    JupyterExecError,
    MapError,
    SpecError,
    TaskError,
    describe_error,
    status_of,
)
from .fanout import MapRequest, run_map
from .monitor import Monitor
from .output import ConsoleSink, RunOutput
from .policy import Policy, policy_in_effect
from .runner.protocol import Envelope, OutputSink
from .runner.transfer import pack_inputs
from .spec import Limits, RunSpec
from .status import Status
from .storage.space import Room
from .store import Store

__all__ = ["EventCallback", "Manager", "RunResult"]

#: ``on_event(kind, data)``: called from the waiting thread and the monitor thread.
EventCallback = Callable[[str, dict[str, Any]], None]


@dataclass
class RunResult:
    """A finished, successful run: the last value and the ``--out`` values, as data."""

    run_id: int
    status: Status
    value: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)


class Manager:
    """Runs cells for one kernel and keeps the record."""

    def __init__(self, config: ExecConfig | None = None, kernel_id: str | None = None) -> None:
        self.config = config or ExecConfig(config=application_config())
        self.policy = policy_in_effect()  # the administrator's; read once per process
        self.kernel_id = kernel_id or f"pid-{os.getpid()}"
        self.store = Store(self.config.store_path)
        self.logs_dir = self.config.logs_dir  # fixed with the store: both live in data_dir
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        # Runs are refused while the disks of their records are (nearly) full.
        self.room = Room([Path(self.config.data_dir), self.store.path.parent], self.store.reserve)
        self.store.reserve.ensure(self.config.min_free_bytes())
        self.scratch_root = Path(self.config.scratch_dir)
        self.scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._backends: dict[str, ExecutorBackend] = {}
        self.envs = EnvCache(self.config.envs_dir, self.config.store_path, factory.env_builder_for)
        self.cache = RunCache(self.config.store_path, self.config.cache_max_bytes())
        self.default_env: EnvSpec | None = None  # %jx env: inherited by every run
        self._active: dict[int, TaskHandle] = {}
        self._starting: set[int] = set()  # recorded, not yet submitted (env being built)
        self._cancel_asked: set[int] = set()  # cancelled while starting: cancelled once submitted
        self._lock = threading.Lock()
        # Cancel requests from the side panel or other kernels, for runs past a fraction of a second.
        self._cancel_watch = CancelWatcher(self.store, lambda: (*self._starting, *self._active), self.cancel)
        self.reaped = self.reap()
        atexit.register(self.shutdown)

    def reap(self) -> dict[str, int]:
        """Remove what dead kernels left behind: each backend's leftovers, then unfinished rows."""
        return {**factory.reap_all(), "runs": self.store.close_orphans(pid_alive)}

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
    ) -> RunResult:
        """Run ``code`` as ``spec`` says; raise the ``TaskError`` that ends it otherwise."""
        emit = on_event or _ignore
        backend = self.backend(spec.backend)
        wanted_env = self.wanted_env(spec)
        spec = self._admitted(spec, backend, wanted_env)
        inputs = pack_inputs(spec.inputs, namespace or {})
        self.room.check(self.config.min_free_bytes())
        shown = sink or ConsoleSink()
        key = self._cache_key(code, inputs, spec, backend, wanted_env, shown) if spec.cache else None
        hit = self.cache.get(key) if key else None
        run_id = self.record(code, spec, backend, spec.name)
        log_path = self.logs_dir / f"{run_id}.log"
        emit(
            "created",
            {
                "run_id": run_id,
                "backend": backend.name,
                "isolation": backend.isolation,
                "limits": spec.limits.as_dict(),
                "log_path": str(log_path),
                "name": spec.name,
            },
        )
        output = RunOutput(run_id, log_path, shown, self.config.output_limit_bytes())
        if hit is not None:
            return self._replay(run_id, hit, spec, output, log_path, emit)
        recorder = Recorder(output, self.cache.max_size) if key else None
        scratch = (
            Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=self.scratch_root)) if backend.needs_scratch else None
        )
        self._starting.add(run_id)
        self._cancel_watch.run_started()
        outcome: Outcome | None = None
        monitor: Monitor | None = None
        leases = ExitStack()
        try:
            spec, environment = self._environment(spec, wanted_env, backend, shown, leases)
            handle = backend.submit(
                Submission(run_id, self.kernel_id, code, spec, inputs, scratch, recorder or output, environment)
            )
            with self._lock:
                self._active[run_id] = handle
                cancel_now = run_id in self._cancel_asked
            if cancel_now:
                backend.cancel(handle)
            self.store.mark_running(run_id, str(log_path))
            emit("running", {"started": handle.started})
            try:
                # Sample only runs that last: a short cell never pays for a monitor thread, and
                # no thread at all for a backend that cannot tell.
                if backend.samples and not handle.wait(_FIRST_SAMPLE):
                    monitor = Monitor(lambda: backend.sample(handle), lambda sample: emit("sample", sample)).start()
                envelope = backend.get_result(handle)
            except KeyboardInterrupt:
                backend.cancel(handle)
                handle.wait(10)
                raise
            outcome = handle.outcome
            result = RunResult(
                run_id, Status.SUCCEEDED, envelope.decoded_value(spec.trust), envelope.decoded_outputs(spec.trust)
            )
            if key and recorder is not None and not recorder.overflow:
                self._keep(key, run_id, backend, code, spec, envelope, recorder)
        except BaseException as error:
            active = self._active.get(run_id)
            outcome = outcome or (active.outcome if active is not None else None)
            self._finish(run_id, status_of(error), outcome, error, monitor, emit, output.log_cut)
            raise
        else:
            self._finish(run_id, Status.SUCCEEDED, outcome, None, monitor, emit, output.log_cut)
            return result
        finally:
            leases.close()
            self._active.pop(run_id, None)
            self._starting.discard(run_id)
            self._cancel_asked.discard(run_id)
            output.close()
            if scratch is not None:
                try:
                    scratch.rmdir()  # the usual case (the cell left nothing), and far cheaper than rmtree
                except OSError:
                    shutil.rmtree(scratch, ignore_errors=True)

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
        does not fan out itself); see ``fanout``. Every item runs; then a ``MapError`` carries all
        results and each failed item's error (``return_exceptions``: the errors stand in the list)."""
        run_id, outcome = run_map(self, work, items, spec, how or MapRequest())
        if not outcome.errors:
            return outcome.results
        if return_exceptions:
            return [outcome.errors.get(i, result) for i, result in enumerate(outcome.results)]
        raise MapError(outcome.results, dict(sorted(outcome.errors.items())), run_id)

    def record(self, code: str, spec: RunSpec, backend: ExecutorBackend, name: str | None) -> int:
        """A new row for a run of ``code`` on ``backend``, queued; its id."""
        return self.store.create_run(
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
        self,
        code: str,
        inputs: str | None,
        spec: RunSpec,
        backend: ExecutorBackend,
        wanted_env: EnvSpec | None,
        shown: OutputSink,
    ) -> str | None:
        """The run's key in the cache of identical runs; None (and why, on stderr) if it has none."""
        try:
            return self.cache_key(code, inputs, spec, backend, wanted_env)
        except NotCacheable as why:
            reason = str(why)
        except Exception as error:  # what the key needs cannot be read now: the run just runs
            reason = f"cannot tell what the run depends on ({type(error).__name__}: {error})"
        shown.output("stderr", f"[jupyter-exec] --cache: not cached: {reason}\n")
        return None

    def cache_key(
        self, code: str, inputs: str | None, spec: RunSpec, backend: ExecutorBackend, wanted_env: EnvSpec | None
    ) -> str:
        """``run_key`` of a run (limits merged, as the policy bounds them) with its runtime env's hash
        and env vars and the backend's identity; ``NotCacheable`` if it cannot be cached."""
        spec = self._admitted(spec, backend, wanted_env)
        env = None
        if wanted_env is not None:
            builder = backend.env_builder(wanted_env)
            env = env_hash(wanted_env, builder.target if builder else backend.name)
            spec = replace(spec, env={**wanted_env.env_vars, **spec.env})
        return run_key(code=code, inputs=inputs, spec=spec, identity=backend.identity(spec), env=env)

    def _replay(
        self, run_id: int, hit: CacheHit, spec: RunSpec, output: RunOutput, log_path: Path, emit: EventCallback
    ) -> RunResult:
        """A cache hit as run ``run_id``: the stored output shown (and logged) again, the values
        decoded; nothing runs. Recorded as ``cached``, with the run it came from."""
        self.store.mark_running(run_id, str(log_path))
        try:
            for kind, data in hit.output:
                if kind == "display":
                    output.display(data)
                else:
                    output.output(kind, data)
            envelope = Envelope(value=hit.value, outputs=hit.outputs)
            result = RunResult(
                run_id, Status.CACHED, envelope.decoded_value(spec.trust), envelope.decoded_outputs(spec.trust)
            )
        except BaseException as error:
            self._finish(run_id, status_of(error), None, error, None, emit, output.log_cut)
            raise
        finally:
            output.close()
        replayed = Outcome(Status.CACHED, details={"cached_from": hit.run_id})
        self._finish(run_id, Status.CACHED, replayed, None, None, emit, output.log_cut)
        return result

    def _keep(
        self,
        key: str,
        run_id: int,
        backend: ExecutorBackend,
        code: str,
        spec: RunSpec,
        envelope: Envelope,
        recorder: Recorder,
    ) -> None:
        """Put a succeeded run in the cache (a pickle only from a run with --trust, which its key names)."""
        try:
            self.cache.put(
                key,
                run_id=run_id,
                backend=backend.name,
                code=code,
                trusted=spec.trust,
                output=recorder.chunks,
                value=envelope.value,
                outputs=envelope.outputs,
            )
        except ValueError:  # a pickle the sandbox sent unasked: never kept
            pass

    def _admitted(self, spec: RunSpec, backend: ExecutorBackend, wanted_env: EnvSpec | None) -> RunSpec:
        """The spec with the default limits under its own and the administrator's ceilings over
        both; a ``PolicyError`` if it asks for more than the policy allows (nothing is recorded yet)."""
        image = backend.image(wanted_env)
        if wanted_env is not None and wanted_env.image and image is None:
            raise SpecError(
                f"image {wanted_env.image}: only the container backend runs images, and this run is on "
                f"{backend.name}, which runs cells on its own Python; use %%sandbox --backend container, "
                "or drop the image"
            )
        self.policy.check_image(image)
        if self.policy.sources:  # no policy file: the backend's options have nothing to pass
            spec = type(backend).admit(spec, self.policy) or spec
        enforced = frozenset() if backend.defaults_applied_remotely else backend.enforced_limits  # none merged here
        return replace(spec, limits=_merged_limits(spec.limits, self.config.default_limits(), enforced, self.policy))

    def wanted_env(self, spec: RunSpec) -> EnvSpec | None:
        """The run's runtime env with the kernel default (``%jx env``) inherited; None if empty."""
        wanted: EnvSpec | None = spec.runtime_env
        if self.default_env is not None:
            wanted = wanted.inherit(self.default_env) if wanted else self.default_env
        return None if wanted is None or wanted.is_empty() else wanted

    def _environment(
        self, spec: RunSpec, wanted: EnvSpec | None, backend: ExecutorBackend, shown: OutputSink, leases: ExitStack
    ) -> tuple[RunSpec, BuiltEnv | None]:
        """The run's runtime env (``wanted_env``), built or found in the cache.

        Its env_vars join the run's environment variables; the env is leased for the run.
        """
        if wanted is None:
            return spec, None
        spec = replace(spec, runtime_env=wanted, env={**wanted.env_vars, **spec.env})
        builder = backend.env_builder(wanted)
        if builder is None:
            if backend.native_runtime_env:
                return spec, None
            raise BackendUnavailableError(
                backend.name,
                "runtime environments (--pip, --working-dir, ...) are not supported by this backend yet",
                "use --backend seccomp",
            )

        def progress(line: str) -> None:
            shown.output("stderr", f"[jupyter-exec] {line}\n")

        environment = self.envs.ensure(wanted, builder, progress)
        leases.enter_context(self.envs.lease(environment.hash))
        return spec, environment

    def _finish(
        self,
        run_id: int,
        status: Status,
        outcome: Outcome | None,
        error: BaseException | None,
        monitor: Monitor | None,
        emit: EventCallback,
        log_cut: str | None,
    ) -> None:
        if monitor is not None:
            monitor.stop()
        if isinstance(error, TaskError):
            error.run_id = run_id
            error.log_path = str(self.logs_dir / f"{run_id}.log")
        # The backend's peak can miss memory charged before the run's cgroup was joined; samples
        # can miss a short spike: the larger of the two is the better answer.
        peak = (
            max((outcome.peak_memory if outcome else None) or 0, (monitor.peak_memory if monitor else None) or 0)
            or None
        )
        self.store.finish_run(
            run_id,
            status,
            error=describe_error(error),
            exit_code=outcome.exit_code if outcome else None,
            peak_memory=peak,
            cpu_seconds=outcome.cpu_seconds if outcome else None,
            details={**(outcome.details if outcome else {}), **({"log": log_cut} if log_cut else {})},
        )
        if emit is not _ignore:  # the row is read back only for someone watching
            emit(
                "finished",
                {
                    "status": status,
                    "error": describe_error(error),
                    "peak_memory": peak,
                    "cpu_seconds": outcome.cpu_seconds if outcome else None,
                    "duration": (self.store.get(run_id) or {}).get("duration"),
                },
            )

    def cancel(self, run_id: int) -> bool:
        """Cancel a run of this kernel that is still going (or still starting: it is
        cancelled as soon as it is submitted)."""
        with self._lock:
            handle = self._active.get(run_id)
            if handle is None and run_id in self._starting:
                self._cancel_asked.add(run_id)
                return True
        return bool(handle and handle.backend.cancel(handle))

    def log_text(self, run_id: int) -> str:
        row = self.store.get(run_id)
        if row is None:
            raise JupyterExecError(f"no run {run_id}; `%jx runs` lists them")
        path = row["log_path"]
        if not path or not Path(path).exists():
            return ""
        return Path(path).read_text(encoding="utf-8", errors="replace")

    def shutdown(self) -> None:
        self._cancel_watch.stop()
        for backend in list(self._backends.values()):
            backend.shutdown()
        self._backends.clear()


_FIRST_SAMPLE = 0.3  # seconds a run goes before its resources are sampled


@functools.lru_cache(maxsize=64)
def _merged_limits(limits: Limits, defaults: Limits, enforced: frozenset[str] | None, policy: Policy) -> Limits:
    """``limits`` over those ``defaults`` a backend enforces (None: all; a Ray task gets the default
    timeout, not the sandbox's pids or file-size limits), under ``policy``'s ceilings; worked out
    once per combination (a refusal is not cached: it raises)."""
    if enforced is not None:
        defaults = Limits(**{k: v for k, v in defaults.as_dict().items() if k in enforced})
    return policy.bound(limits, limits.merged_over(defaults), enforced)


def _ignore(kind: str, data: dict[str, Any]) -> None:
    """The event callback of a run nobody watches."""
