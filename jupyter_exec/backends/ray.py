"""Run a cell as a Ray task: on an embedded local Ray, or on a cluster by address.

Ray is a placement, not a sandbox: the cell runs inside a Ray worker process (no
subprocess per task, so a trivial cell costs about what a trivial Ray task costs) with
the resources it asks for. Results come back as the bootstrap's tagged-JSON envelope,
decoded as data like every backend's; note that Ray itself moves objects as pickle, so
the cluster's workers are trusted as Ray always trusts them.

The connection is one per process, shared by every ``RayBackend`` and by ``map``:

- no address: an embedded local Ray is started once, with a progress message, and
  stopped when the kernel exits;
- an address (``auto``, ``IP:PORT``, ``ray://HOST:PORT``): connect as a driver;
  disconnecting never stops that cluster;
- Ray already initialised in this process (the user's own ``ray.init``): used as is,
  never shut down.
"""

from __future__ import annotations

import atexit
import dataclasses
import heapq
import importlib.util
import json
import logging
import math
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

from ..errors import (
    BackendUnavailableError,
    NodeFailedError,
    ResourceLimitError,
    SpecError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    remote_error,
)
from ..runner import bootstrap
from ..runner.protocol import Envelope
from ..runner.sanitize import sanitize_bundle
from ..spec import Limits, RunSpec, parse_size
from . import ray_task
from .ray_output import OutputPump
from .base import Availability, ExecutorBackend, Outcome, Submission, TaskHandle

__all__ = ["RayBackend", "RayOptions", "connection", "ray_runtime_env"]

_NODE_CACHE_SECONDS = 10.0
_OUTPUT_GRACE = 10.0
_CANCEL_GRACE = 10.0
_TASK_CACHE_SIZE = 64
Say = Callable[[str], None]


@dataclass(frozen=True)
class RayOptions:
    """Where and with what a cell runs on Ray (a ``RunSpec.placement``)."""

    address: str | None = None           # None: embedded local Ray
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None            # bytes reserved for scheduling (Ray's ``memory``)
    node: str | None = None              # node id (or prefix), IP, hostname, or "local"
    soft: bool = False                   # node affinity is a preference, not a rule
    gpu_ids: tuple[str, ...] = ()        # pinned through CUDA_VISIBLE_DEVICES
    retries: int = 0                     # user code is not retried unless asked
    wait_for_resources: bool = False     # for autoscaling clusters: queue instead of failing

    @classmethod
    def parse(cls, **values: Any) -> "RayOptions":
        """Options from user-typed strings; ``None`` values are left at their defaults."""
        v = {k: x for k, x in values.items() if x is not None}
        unknown = set(v) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SpecError(f"unknown Ray option(s) {sorted(unknown)}")
        gpu_ids = tuple(g.strip() for g in str(v.get("gpu_ids", "")).split(",") if g.strip())
        if "num_gpus" not in v and gpu_ids:
            v["num_gpus"] = len(gpu_ids)
        parsed = {
            **v,
            "num_cpus": _non_negative(v.get("num_cpus", 1), "--num-cpus"),
            "num_gpus": _non_negative(v.get("num_gpus", 0), "--num-gpus"),
            "memory": parse_size(v["memory"], "--memory") if "memory" in v else None,
            "gpu_ids": gpu_ids,
            "retries": _retries(v.get("retries", 0)),
        }
        if gpu_ids and parsed["num_gpus"] < len(gpu_ids):
            raise SpecError(f"--gpu-id {','.join(gpu_ids)} names {len(gpu_ids)} GPU(s) but --num-gpus is "
                            f"{parsed['num_gpus']:g}; drop --num-gpus or raise it")
        if parsed.get("soft") and not parsed.get("node"):
            raise SpecError("--soft needs --node (it makes the node a preference)")
        return cls(**parsed)

    @classmethod
    def from_placement(cls, placement: dict[str, Any]) -> "RayOptions":
        return cls(**{k: tuple(x) if isinstance(x, list) else x for k, x in placement.items()})

    def placement(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def resources(self) -> dict[str, float]:
        """What one task reserves, in Ray's resource names."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float(self.memory or 0)}
        return {k: x for k, x in wanted.items() if x}



def ray_runtime_env(spec: RunSpec) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` for a run: its env spec (Ray builds and caches it) and env vars."""
    runtime_env = spec.runtime_env.to_ray_runtime_env() if spec.runtime_env else {}
    if spec.env:
        runtime_env["env_vars"] = dict(spec.env)
    return runtime_env or None


def ship_local_files(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """Upload a local ``working_dir`` / ``py_modules`` to the cluster and name them by URI.

    Ray takes local paths only for a whole job (``ray.init``); a task needs URIs. Ray's own
    upload helpers (what ``ray.init`` uses) name a package by a hash of its content and skip
    the upload when the cluster has it, so an unchanged directory is shipped once.
    """
    if not runtime_env or not {"working_dir", "py_modules"} & runtime_env.keys():
        return runtime_env
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed
    return upload_py_modules_if_needed(upload_working_dir_if_needed(dict(runtime_env), include_gitignore=True),
                                       include_gitignore=True)


def _non_negative(value: Any, option: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{option}: expected a number like 1 or 0.5, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise SpecError(f"{option}: must be 0 or more, got {value!r}")
    return number


def _retries(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(f"--retries: expected a whole number like 0 or 3, got {value!r}") from None
    if number < 0:
        raise SpecError(f"--retries: must be 0 or more, got {value!r}")
    return number


def _describe_resources(resources: dict[str, float]) -> str:
    parts = []
    for key in ("CPU", "GPU", "memory"):
        amount = resources.get(key, 0.0)
        parts.append(f"{amount / 2**30:.1f} GiB memory" if key == "memory" else f"{amount:g} {key}")
    parts += [f"{x:g} {k}" for k, x in sorted(resources.items())
              if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")]
    return ", ".join(parts)


class _Connection:
    """This process's link to Ray: made once, shared, and closed only if we opened it."""

    def __init__(self) -> None:
        self.address: str | None = None
        self._names: set[str] = set()  # addresses that name this cluster: as asked, and as Ray reports it
        self.connected = False
        self.owned = False            # we called ray.init, so we may call ray.shutdown
        self.started_cluster = False  # ... and that started an embedded local Ray
        self._lock = threading.Lock()
        self._nodes: list[dict] = []
        self._tasks: dict[tuple, Any] = {}
        self._nodes_at = 0.0

    def ensure(self, address: str | None, say: Say) -> None:
        """Connected to ``address`` (None: the embedded local Ray), or an error saying why not."""
        with self._lock:
            if self.connected:
                if address and address not in self._names and not (address == "auto" and not self.started_cluster):
                    raise BackendUnavailableError(
                        "ray", f"this kernel is already connected to Ray at {self.address}",
                        "restart the kernel to connect to another cluster")
                return
            import ray
            if ray.is_initialized():
                self.owned = False
            elif address is None:
                say("[jupyter-exec] starting a local Ray for this kernel (once; this takes 10-20 s)...\n")
                began = time.monotonic()
                ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
                self.owned = self.started_cluster = True
                say(f"[jupyter-exec] local Ray ready in {time.monotonic() - began:.0f} s "
                    f"({_describe_resources(ray.cluster_resources())}); it stops with this kernel\n")
            else:
                say(f"[jupyter-exec] connecting to Ray at {address}...\n")
                try:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
                except (ConnectionError, RuntimeError, ValueError) as error:
                    raise BackendUnavailableError(
                        "ray", f"cannot connect to Ray at {address}: {error}",
                        "check the address (`ray status` on the head node); if the cluster uses token "
                        "authentication, set RAY_AUTH_MODE=token for the kernel; or drop --address for a local Ray"
                    ) from error
                self.owned = True
            self.address = ray.get_runtime_context().gcs_address
            self._names = {self.address} | ({address} if address else set())
            self._start(ray)

    def _start(self, ray: Any) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        for module in (bootstrap, ray_task):   # workers need Ray, not jupyter-exec
            ray.cloudpickle.register_pickle_by_value(module)
        context = ray.get_runtime_context()
        self.relay_key = (f"jx-relay-{uuid.uuid4().hex[:12]}", context.namespace)
        self.relay = ray.remote(ray_task.OutputRelay).options(
            name=self.relay_key[0], num_cpus=0, max_concurrency=16,
            scheduling_strategy=NodeAffinitySchedulingStrategy(context.get_node_id(), soft=True)).remote()
        self.cell_task = ray.remote(ray_task.run_cell)
        self._tasks = {}
        self.batch_task = ray.remote(ray_task.run_batch)
        self.connected = True
        self.output = OutputPump(ray, self.relay)
        atexit.register(self.close)         # runs before Ray's own exit hook, registered earlier

    def cell_task_for(self, options: RayOptions, node_id: str | None, runtime_env: dict | None) -> Any:
        """The cell task with these options, made once per distinct options (``options()`` is not free)."""
        key = (options.num_cpus, options.num_gpus, options.memory, options.retries, node_id, options.soft,
               json.dumps(runtime_env, sort_keys=True))
        task = self._tasks.get(key)
        if task is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            task_options: dict[str, Any] = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus,
                                            "max_retries": options.retries, "runtime_env": runtime_env}
            if options.memory:
                task_options["memory"] = options.memory
            if node_id:
                task_options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=options.soft)
            if len(self._tasks) >= _TASK_CACHE_SIZE:
                self._tasks.clear()
            task = self._tasks[key] = self.cell_task.options(**task_options)
        return task

    def nodes(self, fresh: bool = False) -> list[dict]:
        """The cluster's live nodes (cached for a few seconds: submit stays cheap)."""
        if fresh or time.monotonic() - self._nodes_at > _NODE_CACHE_SECONDS:
            import ray
            self._nodes = [n for n in ray.nodes() if n.get("Alive")]
            self._nodes_at = time.monotonic()
        return self._nodes

    def resolve_node(self, wanted: str) -> str:
        """The node id that ``--node`` names: an id or its prefix, an IP, a hostname, or ``local``."""
        if wanted == "local":
            import ray
            return ray.get_runtime_context().get_node_id()
        for fresh in (False, True):
            for node in self.nodes(fresh):
                if wanted in (node["NodeManagerAddress"], node["NodeManagerHostname"], node["NodeID"]) or (
                        len(wanted) >= 6 and node["NodeID"].startswith(wanted)):
                    return node["NodeID"]
        known = "; ".join(f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})" for n in self.nodes())
        raise SpecError(f"--node {wanted}: no live node by that id, IP or name; choose one of: {known}, or local")

    def check_feasible(self, options: RayOptions, node_id: str | None) -> None:
        """Fail at once when no node could ever run the task (Ray would queue it forever).
        The cluster works; the request does not fit it: a ``SpecError``, as for a bad option."""
        wanted = options.resources()
        for fresh in (False, True):
            nodes = [n for n in self.nodes(fresh) if node_id is None or options.soft or n["NodeID"] == node_id]
            if any(all(n["Resources"].get(k, 0.0) >= x for k, x in wanted.items()) for n in nodes):
                return
        cluster = "; ".join(f"node {n['NodeID'][:12]} ({n['NodeManagerAddress']}): "
                            f"{_describe_resources(n['Resources'])}" for n in self.nodes())
        where = f" on node {node_id[:12]}" if node_id and not options.soft else ""
        asked = ", ".join(f"{x:g} {k}" if k != "memory" else f"{x / 2**30:.1f} GiB memory" for k, x in wanted.items())
        raise SpecError(f"no node of the Ray cluster can ever run this task{where}: it asks for {asked}; the cluster "
                        f"has {cluster}. Ask for less, or pass --wait-for-resources if the cluster autoscales")

    def close(self) -> None:
        """Disconnect; stops the embedded Ray only (never a cluster we did not start)."""
        with self._lock:
            if not self.connected:
                return
            import ray
            self.connected = False
            if not ray.is_initialized():    # Ray's own exit hook came first: nothing left to close
                self.output.close(0)
                return
            ray.kill(self.relay)            # ends the pump's pending pull, so it never outlives the connection
            self.output.close(_CANCEL_GRACE)
            if self.owned:
                ray.shutdown()


_connection = _Connection()


def connection() -> _Connection:
    return _connection


class RayBackend(ExecutorBackend):
    """A cell as a Ray task with the resources it asks for; output streams via a relay actor."""

    name: ClassVar[str] = "ray"
    isolation: ClassVar[str] = "ray"
    enforced_limits: ClassVar[frozenset[str] | None] = frozenset({"timeout"})
    native_runtime_env: ClassVar[bool] = True

    def __init__(self, pool_size: int = 0) -> None:
        self._runs: dict[int, _RayRun] = {}

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("ray") is None:
            return Availability(False, "Ray is not installed", "pip install 'jupyter-exec[ray]'")
        return Availability(True)

    def submit(self, submission: Submission) -> TaskHandle:
        options = RayOptions.from_placement(submission.spec.placement)
        _refuse_unenforced(submission.spec.limits)
        conn = connection()
        conn.ensure(options.address, lambda text: submission.sink.output("stderr", text))
        node_id = conn.resolve_node(options.node) if options.node else None
        if not options.wait_for_resources:
            conn.check_feasible(options, node_id)
        request = json.dumps({"run_id": submission.run_id, "code": submission.code, "inputs": submission.inputs,
                              "outputs": list(submission.spec.outputs), "trust": submission.spec.trust,
                              "cuda_visible_devices": ",".join(options.gpu_ids) or None, "relay": conn.relay_key})
        run = _RayRun(submission, self, conn, node_id)
        self._runs[submission.run_id] = run
        conn.output.track(submission.run_id, run)
        try:
            runtime_env = ship_local_files(ray_runtime_env(submission.spec))
            run.ref = conn.cell_task_for(options, node_id, runtime_env).remote(request)
        except BaseException:
            self.forget(submission.run_id)
            raise
        if submission.spec.limits.timeout is not None:
            _deadlines.add(time.monotonic() + submission.spec.limits.timeout, run)
        return run.handle

    def get_result(self, handle: TaskHandle, timeout: float | None = None) -> Envelope:
        """Waits for the task in the calling thread: no thread per run (a trivial cell stays
        close to a bare Ray task). An interrupt there reaches the manager, which cancels."""
        run = self._runs.get(handle.run_id)
        if run is not None:
            run.resolve(timeout)
        return super().get_result(handle, timeout)

    def wait(self, handles: Iterable[TaskHandle], timeout: float | None = None
             ) -> tuple[list[TaskHandle], list[TaskHandle]]:
        import ray
        handles = list(handles)
        runs = {run.ref: run for h in handles if not h.done() and (run := self._runs.get(h.run_id))}
        if runs:
            ready, _ = ray.wait(list(runs), num_returns=1, timeout=timeout)
            for ref in ready:
                runs[ref].resolve(0)
        return [h for h in handles if h.done()], [h for h in handles if not h.done()]

    def cancel(self, handle: TaskHandle) -> bool:
        run = self._runs.get(handle.run_id)
        if run is None or handle.done():
            return False
        run.cancel()
        run.resolve(_CANCEL_GRACE)
        return True

    def shutdown(self) -> None:
        for run in list(self._runs.values()):
            self.cancel(run.handle)
        connection().close()

    def get_available_resources(self) -> dict[str, Any]:
        """Per live node: id, address, total resources; plus what is free cluster-wide now."""
        conn = connection()
        if not conn.connected:
            return {}
        import ray
        return {"address": conn.address, "available": ray.available_resources(),
                "nodes": [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"],
                           "hostname": n["NodeManagerHostname"],
                           "resources": {k: x for k, x in n["Resources"].items() if not k.startswith("node:")}}
                          for n in conn.nodes(fresh=True)]}

    def forget(self, run_id: int) -> None:
        self._runs.pop(run_id, None)
        connection().output.untrack(run_id)


def _refuse_unenforced(limits: Limits) -> None:
    """A Ray task gets only a wall-clock limit; other limits are refused, not ignored.
    (A Ray worker always has the cluster's network: ``network`` does not apply.)"""
    unenforced = [f.name for f in dataclasses.fields(limits)
                  if f.name not in RayBackend.enforced_limits | {"network"} and getattr(limits, f.name) != f.default]
    if unenforced:
        raise BackendUnavailableError(
            "ray", f"a Ray task cannot enforce {', '.join(unenforced)} limits",
            "use --memory / --num-cpus to reserve resources on Ray, or %%sandbox for hard limits")


class _StillRunning(Exception):
    """The task did not end within the wait asked for (not an outcome)."""


class _Deadlines:
    """One thread that force-cancels every run that outlives its ``--timeout``.

    The thread waiting for a run can then block in a plain ``ray.get``: Ray's timed get
    costs a trivial cell about 0.1 ms more, a twentieth of the whole task. Runs are held
    weakly and ended ones are dropped from the top as new ones come, so a loop of many
    short cells keeps no memory alive.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, weakref.ref[_RayRun]]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, when: float, run: "_RayRun") -> None:
        with self._changed:
            self._drop_ended()
            heapq.heappush(self._due, (when, run.submission.run_id, weakref.ref(run)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="jx-ray-deadlines")
                self._thread.start()
            elif self._due[0][2]() is run:
                self._changed.notify()

    def _drop_ended(self) -> None:
        while self._due and _ended(self._due[0][2]()):
            heapq.heappop(self._due)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._drop_ended()
                if not self._due:
                    self._changed.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                run = heapq.heappop(self._due)[2]()
            if run is not None:
                run.expire()         # does nothing if the run has ended meanwhile


def _ended(run: "_RayRun | None") -> bool:
    return run is None or run.handle.done()


_deadlines = _Deadlines()


class _RayRun:
    """One cell on Ray: waits for the task, takes its output, maps how it ended."""

    def __init__(self, submission: Submission, backend: RayBackend, conn: _Connection, node_id: str | None) -> None:
        self.submission, self.backend, self.conn = submission, backend, conn
        self.handle = TaskHandle(submission, backend)
        self.ref: Any = None
        self.cancel_requested = False
        self.timed_out = False
        self.began = time.monotonic()
        self.wants_output = False       # ended with chunks not yet delivered: the pump pulls for them
        self.received = 0
        self._output = threading.Condition()
        self._resolving = threading.RLock()     # cancel() resolves too, maybe from the interrupted thread
        self.details: dict[str, Any] = {"address": conn.address, "node_affinity": node_id}

    def deliver(self, seq: int, items: list) -> None:
        sink = self.submission.sink
        with self._output:
            for kind, payload in items:
                if kind == "display":
                    sink.display(sanitize_bundle(payload, self.submission.spec.trust))
                else:
                    sink.output(kind, payload)
            self.received = max(self.received, seq)
            self._output.notify_all()

    def cancel(self) -> None:
        import ray
        self.cancel_requested = True
        ray.cancel(self.ref, force=True)

    def expire(self) -> None:
        """The run's ``--timeout`` passed: force-cancel it (its waiter then reports the timeout)."""
        import ray
        if not self.handle.done():
            self.timed_out = True
            try:
                ray.cancel(self.ref, force=True)
            except Exception:      # Ray gone (kernel exiting): the waiter hears of it from ray.get
                pass

    def resolve(self, timeout: float | None) -> None:
        """Finish the handle if the task ends within ``timeout`` (None: however long it takes)."""
        with self._resolving:
            if self.handle.done():
                return
            try:
                outcome = self._outcome(timeout)
            except _StillRunning:
                return
            except Exception as error:        # never leave a handle unfinished
                outcome = Outcome("failed", error=NodeFailedError(f"lost the Ray task: {error!r}"))
            self.backend.forget(self.submission.run_id)
            outcome.details = {**self.details, **outcome.details}
            self.handle.finish(outcome)

    def _outcome(self, wait: float | None) -> Outcome:
        import ray
        from ray.exceptions import GetTimeoutError, RayError
        until = None if wait is None else time.monotonic() + wait
        while True:
            try:
                # No timeout unless the caller asked for one: --timeout is ``_deadlines``' job.
                reply = ray.get(self.ref) if until is None else (
                    ray.get(self.ref, timeout=max(0.0, until - time.monotonic())))
                result = json.loads(reply)
                break
            except GetTimeoutError:
                if until is not None and time.monotonic() >= until:
                    raise _StillRunning from None
                # ray.get can time out at once after an interrupted get (seen with Ray 2.60): wait again
            except RayError as ray_error:
                error = self._map_error(ray_error)
                return Outcome(error.status, error=error)
        if self.received < result["chunks"]:
            self.wants_output = True
            self.conn.output.wake()
            with self._output:
                self._output.wait_for(lambda: self.received >= result["chunks"], _OUTPUT_GRACE)
        raw = result["envelope"]
        envelope = Envelope(value=raw.get("value"), outputs=raw.get("outputs", {}), error=raw.get("error"),
                            untransferable=raw.get("untransferable"), usage=raw.get("usage", {}))
        outcome = Outcome("succeeded", envelope=envelope, cpu_seconds=envelope.usage.get("cpu_seconds"),
                          details={k: result[k] for k in ("node_id", "task_id", "gpu_ids", "pid",
                                                          "cuda_visible_devices")})
        if envelope.error:
            error = envelope.remote_error(run_id=self.submission.run_id)
            outcome.status, outcome.error = error.status, error
        return outcome

    def _map_error(self, error: Exception) -> TaskError:
        """Ray's exceptions as ours: the cell's, cancelled, out of memory, or the node's fault."""
        from ray import exceptions as rx
        context = {"run_id": self.submission.run_id}
        if self.timed_out and not self.cancel_requested:
            return TaskTimeoutError(f"timed out after {self.submission.spec.limits.timeout:g} s (--timeout); "
                                    "the Ray task was cancelled", **context)
        if self.cancel_requested or isinstance(error, rx.TaskCancelledError):
            return TaskCancelledError(f"run {self.submission.run_id} was cancelled (Ray task force-cancelled)",
                                      **context)
        if isinstance(error, rx.OutOfMemoryError):
            return ResourceLimitError(f"Ray's memory monitor killed the task (its node ran low on memory): {error}",
                                      status="oom", **context)
        if isinstance(error, rx.RuntimeEnvSetupError):
            return TaskError(f"Ray could not set up the runtime env (--pip, --working-dir, --env): {error}",
                             **context)
        if isinstance(error, rx.RayTaskError):
            cause = error.cause if isinstance(error.cause, BaseException) else error
            return remote_error(type(cause).__name__, str(cause), error.traceback_str, **context)
        return NodeFailedError(f"the Ray worker or node running the cell failed: {type(error).__name__}: {error}",
                               **context)
