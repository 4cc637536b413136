"""Run a cell as a Ray task: on an embedded local Ray, or on a cluster by address.

Ray is a placement, not a sandbox: the cell runs inside a Ray worker process (no
subprocess per task, so a trivial cell costs about what a trivial Ray task costs) with
the resources it asks for (``RayOptions``). Results come back as the bootstrap's
tagged-JSON envelope, decoded as data like every backend's; note that Ray itself moves
objects as pickle, so the cluster's workers are trusted as Ray always trusts them.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from jupyter_exec.backends import names
from jupyter_exec.backends.base import Availability, ExecutorBackend, MapOutcome, Submission, TaskHandle
from jupyter_exec.backends.runs import RunRegistry
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.extras import install_hint
from jupyter_exec.policy import Policy
from jupyter_exec.runner.protocol import Envelope, build_request
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.units import parse_duration

from .connection import connection, ray_runtime_env, ship_local_files
from .fanout import fan_out
from .options import LOCAL_RAY, RayOptions
from .quiet import noise
from .run import RayRun, deadlines

__all__ = ["RayBackend"]

_CANCEL_GRACE = 10.0


class RayBackend(ExecutorBackend):
    """A cell as a Ray task with the resources it asks for; output streams via a relay actor."""

    name: ClassVar[str] = names.RAY
    isolation: ClassVar[str] = "ray"
    enforced_limits: ClassVar[frozenset[str]] = frozenset({"timeout"})
    options_class = RayOptions
    native_runtime_env: ClassVar[bool] = True
    fans_out: ClassVar[bool] = True

    def __init__(self, config: ExecConfig) -> None:
        availability = self.availability()  # %%rayrun names its backend, so nothing asked yet
        if not availability.ok:
            raise BackendUnavailableError(self.name, availability.reason, availability.fix)
        super().__init__(config)
        self.runs: RunRegistry[RayRun] = RunRegistry()

    @staticmethod
    def options(spec: RunSpec) -> RayOptions:
        """The run's Ray options (the defaults when it gave none)."""
        return spec.placement if isinstance(spec.placement, RayOptions) else RayOptions()

    @classmethod
    def admit(cls, spec: RunSpec, policy: Policy) -> None:
        """A Ray task's reservations and address, against the policy, before anything connects."""
        options = cls.options(spec)
        policy.at_most("gpus", "--num-gpus", options.num_gpus)
        policy.at_most("ray_num_cpus", "--num-cpus", options.num_cpus)
        policy.at_most("ray_memory", "--memory", options.memory)
        address = options.address or LOCAL_RAY
        policy.require(
            "ray_addresses", address, "the embedded local Ray" if address == LOCAL_RAY else f"Ray address {address}"
        )

    def refusal(self, limits: Limits, unenforced: tuple[str, ...]) -> tuple[str, str]:
        """A Ray task gets only a wall-clock limit (and always the cluster's network)."""
        return (
            f"a Ray task cannot enforce {', '.join(unenforced)} limits",
            "use --memory / --num-cpus to reserve resources on Ray, or %%sandbox for hard limits",
        )

    @classmethod
    def availability(cls) -> Availability:
        if importlib.util.find_spec("ray") is None:
            return Availability(False, "Ray is not installed", install_hint("ray"))
        return Availability(True)

    def submit(self, submission: Submission) -> TaskHandle:
        note = getattr(submission.sink, "note", None)  # the run's log only: where Ray's own lines go
        if note is not None:
            noise.attach(submission.run_id, note)
        try:
            return self._submit(submission)
        except BaseException:
            self.forget(submission.run_id)
            raise

    def _submit(self, submission: Submission) -> TaskHandle:
        options = self.options(submission.spec)
        conn = connection()
        timeline = submission.timeline
        fresh = not conn.connected
        conn.ensure(
            options.address,
            lambda text: submission.sink.output("info", text),  # about Ray, not the cell: never red
            self.connect_timeout(),
            timeline.mark if timeline is not None else None,
        )
        if conn.output.relay_died:  # its worker was killed: this run's output needs a live one
            conn.output.relay_died = False
            conn.new_relay()
        node_id = conn.resolve_node(options.node) if options.node else None
        if not options.wait_for_resources:
            conn.check_feasible(options, node_id)
        if timeline is not None:
            timeline.mark("sandbox_ready", note="connected now" if fresh else None)
        request = build_request(
            submission.code,
            inputs=submission.inputs,
            outputs=submission.spec.outputs,
            trust=submission.spec.trust,
            env={},
            cwd=None,
            extra={
                "run_id": submission.run_id,
                "relay": conn.relay_key,
                "cuda_visible_devices": ",".join(options.gpu_ids) or None,
            },
        ).decode()
        runtime_env = ship_local_files(ray_runtime_env(submission.spec))
        # The task first: the bookkeeping below then overlaps with it on another core.
        run = self.runs.add(
            RayRun(submission, self, conn, node_id, conn.cell_task_for(options, node_id, runtime_env).remote(request))
        )
        conn.output.track(submission.run_id, run)
        conn.track(submission.run_id, run.lose)
        if submission.spec.limits.timeout is not None:
            deadlines.add(time.monotonic() + submission.spec.limits.timeout, run)
        return run.handle

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
        """``work`` (a function, or cell code that sees ``item``) over ``items`` as batches of Ray tasks."""
        options = self.options(spec)
        conn = connection()
        conn.ensure(options.address, progress or (lambda text: None), self.connect_timeout())
        return fan_out(
            conn,
            work,
            items,
            options,
            spec,
            run_id=run_id,
            batch_size=batch_size,
            max_in_flight=max_parallel,
            say=progress,
        )

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """Ray's version (where a task runs is in the run's options, which the key covers)."""
        import ray

        return {**super().identity(spec), "ray": ray.__version__}

    def get_result(self, handle: TaskHandle, timeout: float | None = None) -> Envelope:
        """Waits for the task in the calling thread: no thread per run (a trivial cell stays
        close to a bare Ray task). An interrupt there reaches the manager, which cancels."""
        run = self.runs.get(handle.run_id)
        if run is not None:
            run.resolve(timeout)
        return super().get_result(handle, timeout)

    def wait(
        self, handles: Iterable[TaskHandle], timeout: float | None = None
    ) -> tuple[list[TaskHandle], list[TaskHandle]]:
        import ray

        handles = list(handles)
        runs = {run.ref: run for h in handles if not h.done() and (run := self.runs.get(h.run_id))}
        if runs:
            ready, _ = ray.wait(list(runs), num_returns=1, timeout=timeout)
            for ref in ready:
                runs[ref].resolve(0)
        return [h for h in handles if h.done()], [h for h in handles if not h.done()]

    def cancel(self, handle: TaskHandle) -> bool:
        """Cancel the task, and wait a while for Ray to say it ended (nothing else may be waiting)."""
        run = self.runs.get(handle.run_id)
        if run is None or not self.runs.cancel(handle.run_id):
            return False
        run.settle(_CANCEL_GRACE)
        return True

    def shutdown(self) -> None:
        self.runs.shutdown()
        connection().close()

    def get_available_resources(self) -> dict[str, Any]:
        """Per live node: id, address, total resources; plus what is free cluster-wide now."""
        conn = connection()
        if not conn.connected:
            return {}
        import ray

        return {
            "address": conn.address,
            "available": ray.available_resources(),
            "nodes": [
                {
                    "node_id": n["NodeID"],
                    "address": n["NodeManagerAddress"],
                    "hostname": n["NodeManagerHostname"],
                    "resources": {k: x for k, x in n["Resources"].items() if not k.startswith("node:")},
                }
                for n in conn.nodes(fresh=True)
            ],
        }

    def forget(self, run_id: int) -> None:
        self.runs.forget(run_id)
        connection().untrack(run_id)
        noise.detach(run_id)

    def connect_timeout(self) -> float:
        """``ExecConfig.ray_connect_timeout`` in seconds: how long finding a cluster may take."""
        return _seconds(self.config.ray_connect_timeout)


@functools.lru_cache(maxsize=8)
def _seconds(setting: str) -> float:
    return parse_duration(setting, "ExecConfig.ray_connect_timeout")
