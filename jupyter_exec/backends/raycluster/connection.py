"""This process's one link to Ray, shared by every ``RayBackend`` and by ``map``.

- no address: an embedded local Ray is started once, with a progress message, and
  stopped when the kernel exits;
- an address (``auto``, ``IP:PORT``, ``ray://HOST:PORT``): connect as a driver;
  disconnecting never stops that cluster;
- Ray already initialised in this process (the user's own ``ray.init``): used as is,
  never shut down.

Also here: what a run's env becomes in Ray's own ``runtime_env``, and the cluster's
nodes as ``--node`` and the feasibility check read them.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_exec.errors import BackendUnavailableError, SpecError
from jupyter_exec.runner import bootstrap
from jupyter_exec.spec import RunSpec
from jupyter_exec.units import format_bytes

from . import task as ray_task
from .options import RayOptions
from .output import OutputPump

__all__ = ["Connection", "connection", "ray_runtime_env", "ship_local_files"]

_NODE_CACHE_SECONDS = 10.0
_CANCEL_GRACE = 10.0
_TASK_CACHE_SIZE = 64
Say = Callable[[str], None]


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

    return upload_py_modules_if_needed(
        upload_working_dir_if_needed(dict(runtime_env), include_gitignore=True), include_gitignore=True
    )


def _describe_resources(resources: dict[str, float]) -> str:
    parts = []
    for key in ("CPU", "GPU", "memory"):
        amount = resources.get(key, 0.0)
        parts.append(f"{format_bytes(amount)} memory" if key == "memory" else f"{amount:g} {key}")
    parts += [
        f"{x:g} {k}"
        for k, x in sorted(resources.items())
        if k not in ("CPU", "GPU", "memory", "object_store_memory") and not k.startswith("node:")
    ]
    return ", ".join(parts)


class Connection:
    """This process's link to Ray: made once, shared, and closed only if we opened it."""

    def __init__(self) -> None:
        self.address: str | None = None
        self._names: set[str] = set()  # addresses that name this cluster: as asked, and as Ray reports it
        self.connected = False
        self.owned = False  # we called ray.init, so we may call ray.shutdown
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
                        "ray",
                        f"this kernel is already connected to Ray at {self.address}",
                        "restart the kernel to connect to another cluster",
                    )
                return
            import ray

            if ray.is_initialized():
                self.owned = False
            elif address is None:
                say("[jupyter-exec] starting a local Ray for this kernel (once; this takes 10-20 s)...\n")
                began = time.monotonic()
                ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
                self.owned = self.started_cluster = True
                say(
                    f"[jupyter-exec] local Ray ready in {time.monotonic() - began:.0f} s "
                    f"({_describe_resources(ray.cluster_resources())}); it stops with this kernel\n"
                )
            else:
                say(f"[jupyter-exec] connecting to Ray at {address}...\n")
                try:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
                except (ConnectionError, RuntimeError, ValueError) as error:
                    raise BackendUnavailableError(
                        "ray",
                        f"cannot connect to Ray at {address}: {error}",
                        "check the address (`ray status` on the head node); if the cluster uses token "
                        "authentication, set RAY_AUTH_MODE=token for the kernel; or drop --address for a local Ray",
                    ) from error
                self.owned = True
            self.address = ray.get_runtime_context().gcs_address
            self._names = {self.address} | ({address} if address else set())
            self._start(ray)

    def _start(self, ray: Any) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for module in (bootstrap, ray_task):  # workers need Ray, not jupyter-exec
            ray.cloudpickle.register_pickle_by_value(module)
        context = ray.get_runtime_context()
        self.relay_key = (f"jx-relay-{uuid.uuid4().hex[:12]}", context.namespace)
        self.relay = (
            ray.remote(ray_task.OutputRelay)
            .options(
                name=self.relay_key[0],
                num_cpus=0,
                max_concurrency=16,
                scheduling_strategy=NodeAffinitySchedulingStrategy(context.get_node_id(), soft=True),
            )
            .remote()
        )
        self.cell_task = ray.remote(ray_task.run_cell)
        self._tasks = {}
        self.batch_task = ray.remote(ray_task.run_batch)
        self.connected = True
        self.output = OutputPump(ray, self.relay)
        atexit.register(self.close)  # runs before Ray's own exit hook, registered earlier

    def cell_task_for(self, options: RayOptions, node_id: str | None, runtime_env: dict | None) -> Any:
        """The cell task with these options, made once per distinct options (``options()`` is not free)."""
        key = (
            options.num_cpus,
            options.num_gpus,
            options.memory,
            options.retries,
            node_id,
            options.soft,
            json.dumps(runtime_env, sort_keys=True),
        )
        task = self._tasks.get(key)
        if task is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            task_options: dict[str, Any] = {
                "num_cpus": options.num_cpus,
                "num_gpus": options.num_gpus,
                "max_retries": options.retries,
                "runtime_env": runtime_env,
            }
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
                    len(wanted) >= 6 and node["NodeID"].startswith(wanted)
                ):
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
        cluster = "; ".join(
            f"node {n['NodeID'][:12]} ({n['NodeManagerAddress']}): {_describe_resources(n['Resources'])}"
            for n in self.nodes()
        )
        where = f" on node {node_id[:12]}" if node_id and not options.soft else ""
        asked = ", ".join(f"{x:g} {k}" if k != "memory" else f"{format_bytes(x)} memory" for k, x in wanted.items())
        raise SpecError(
            f"no node of the Ray cluster can ever run this task{where}: it asks for {asked}; the cluster "
            f"has {cluster}. Ask for less, or pass --wait-for-resources if the cluster autoscales"
        )

    def close(self) -> None:
        """Disconnect; stops the embedded Ray only (never a cluster we did not start)."""
        with self._lock:
            if not self.connected:
                return
            import ray

            self.connected = False
            if not ray.is_initialized():  # Ray's own exit hook came first: nothing left to close
                self.output.close(0)
                return
            ray.kill(self.relay)  # ends the pump's pending pull, so it never outlives the connection
            self.output.close(_CANCEL_GRACE)
            if self.owned:
                ray.shutdown()


_connection = Connection()


def connection() -> Connection:
    return _connection
