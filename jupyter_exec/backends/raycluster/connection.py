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
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from jupyter_exec.errors import BackendUnavailableError, SpecError
from jupyter_exec.runner import bootstrap, codec
from jupyter_exec.spec import RunSpec
from jupyter_exec.units import format_bytes

from . import task as ray_task
from .options import RayOptions
from .probe import Gcs, GcsGone, probe
from .pump import OutputPump
from .quiet import noise
from .watch import Watch

__all__ = ["Connection", "connection", "ray_runtime_env", "ship_local_files"]

_NODE_CACHE_SECONDS = 10.0
_CANCEL_GRACE = 10.0
_LOSS_GRACE = 15.0  # how long the runs of a lost cluster get to end before Ray is let go of
_WATCH_START = 5.0  # the first look at a cluster just connected to
_TASK_CACHE_SIZE = 64
_PROGRESS_EVERY = 5.0  # seconds between the lines that say a local Ray is still starting
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
        self._fits: set[tuple[Any, str | None]] = set()  # requests known to fit the nodes (cleared with them)
        self.lost: str | None = None  # why the cluster went away, while the watch ends what ran on it
        self._closed = threading.Event()  # set once a lost cluster's connection is closed
        self._loss_lock = threading.Lock()
        self._in_flight: dict[int, Callable[[str], None]] = {}
        self._attempt: _Attempt | None = None  # the last ray.init by address, maybe given up on
        self._watch: Watch | None = None
        self._exit_hook = False

    def ensure(self, address: str | None, say: Say, timeout: float, mark: Say | None = None) -> None:
        """Connected to ``address`` (None: the embedded local Ray), or an error saying why not.
        ``say`` hears how it goes (a line every few seconds while a local Ray starts); ``mark``
        is told ``ray_started`` (a local Ray) or ``ray_connected`` (one at an address) for the
        run's timeline.

        Connecting by address takes at most ``timeout`` to find what is there (``probe``) and
        as long again for ``ray.init``; an interrupt gives up at once. Either way nothing is
        left half-connected: the next call starts afresh."""
        if self.lost is not None:  # the watch is ending the runs of a cluster that went away
            self._closed.wait(_LOSS_GRACE)
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

            noise.install()
            gcs: str | None = None
            self.started_cluster = False
            if ray.is_initialized():
                self.owned = False
            elif address is None:
                say("[jupyter-exec] starting a local Ray for this kernel (once; this takes 10-20 s)...\n")
                began = time.monotonic()
                with _progress(say, began):
                    ray.init(
                        address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
                    )
                if mark is not None:
                    mark("ray_started")
                self.owned = self.started_cluster = True
                say(
                    f"[jupyter-exec] local Ray ready in {time.monotonic() - began:.0f} s "
                    f"({_describe_resources(ray.cluster_resources())}); it stops with this kernel\n"
                )
            else:
                self._previous_attempt_ended(address, timeout)
                say(f"[jupyter-exec] connecting to Ray at {address}...\n")
                found = probe(address, timeout)
                self._attempt = _Attempt(address)
                self._attempt.join(timeout)
                if mark is not None:
                    mark("ray_connected")
                self.owned, gcs = True, found.gcs
            noise.quiet_loggers()  # ray.init set them up afresh
            self.address = ray.get_runtime_context().gcs_address
            self._names = {self.address} | ({address} if address else set())
            self._start(ray)
            if not (address or "").startswith("ray://"):  # a Ray Client's server is not watched: see rayrun.md
                self._watch_cluster(gcs or self.address)

    def _previous_attempt_ended(self, address: str, timeout: float) -> None:
        """A ``ray.init`` given up on (deadline, interrupt) must end before another starts."""
        if self._attempt is not None and not self._attempt.settled.wait(timeout):
            raise BackendUnavailableError(
                "ray",
                f"cannot connect to Ray at {address}: the last attempt to connect (to {self._attempt.address}) "
                "has not ended yet",
                "run the cell again in a few seconds, or restart the kernel",
            )

    def _watch_cluster(self, target: str) -> None:
        gcs = Gcs(target)
        try:
            cluster_id = gcs.cluster_id(_WATCH_START)
        except GcsGone as gone:  # connected a moment ago: the cluster is going already
            noise.say(f"[jupyter-exec] cannot watch the Ray cluster at {target}: {gone}")
            return
        finally:
            gcs.close()
        self._watch = Watch(target, cluster_id, self.lose)

    def track(self, run_id: int, end: Callable[[str], None]) -> None:
        """``end(why)`` is called if the cluster goes while run ``run_id`` (a cell, a map) is on it."""
        self._in_flight[run_id] = end

    def untrack(self, run_id: int) -> None:
        """The run is off the cluster: nothing to end, no output to bring in."""
        self._in_flight.pop(run_id, None)
        if self.connected:
            self.output.untrack(run_id)

    def gone(self) -> str | None:
        """Why the cluster is gone, if one look at it now shows that it is (a run just lost its
        node or worker: the head may have gone with it, before the watch has seen it). Seen
        here first, the loss is acted on at once, as the watch would: the next run must not
        be submitted to a cluster already known to be gone."""
        watch = self._watch
        why = watch.look() if watch is not None and self.connected else None
        if why and self._mark_lost(why):
            threading.Thread(target=self._end_lost, daemon=True, name="jx-ray-lost").start()
        return self.lost

    def _went_away(self, why: str) -> str:
        cluster = (
            f"this kernel's local Ray ({self.address})"
            if self.started_cluster
            else f"the Ray cluster at {self.address}"
        )
        return f"{cluster} went away ({why})"

    def lose(self, why: str) -> None:
        """The cluster went away (the watch saw it): end what runs on it, then let go of Ray, so
        the kernel lives on (Ray would end it) and the next run connects afresh."""
        if self._mark_lost(why):
            self._end_lost()

    def _mark_lost(self, why: str) -> bool:
        """Record why the cluster is gone; False if that was known already."""
        with self._loss_lock:
            if self.lost is not None:
                return False
            self.lost = self._went_away(why)
            return True

    def _end_lost(self) -> None:
        lost = str(self.lost)
        noise.say(f"[jupyter-exec] {lost}: ending the runs on it and disconnecting")
        for end in list(self._in_flight.values()):
            end(lost)
        deadline = time.monotonic() + _LOSS_GRACE
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.close()

    def _start(self, ray: Any) -> None:
        for module in (bootstrap, codec, ray_task):  # workers need Ray, not jupyter-exec
            ray.cloudpickle.register_pickle_by_value(module)
        self.relay = self.new_relay()
        self.cell_task = ray.remote(ray_task.run_cell)
        self._tasks = {}
        self.batch_task = ray.remote(ray_task.run_batch)
        self.connected = True
        self._closed.clear()
        self.output = OutputPump(ray, lambda: self.relay)
        if not self._exit_hook:
            atexit.register(self.close)  # runs before Ray's own exit hook, registered earlier
            self._exit_hook = True

    def new_relay(self) -> Any:
        """A relay actor for the runs' output, on the kernel's own node (pinned: the node lives as
        long as the kernel's connection does; on another node, the relay would die with it). Runs
        submitted from now on push to it."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        context = ray.get_runtime_context()
        self.relay_key = (f"jx-relay-{uuid.uuid4().hex[:12]}", context.namespace)
        self.relay = (
            ray.remote(ray_task.OutputRelay)
            .options(
                name=self.relay_key[0],
                num_cpus=0,
                max_concurrency=16,
                scheduling_strategy=NodeAffinitySchedulingStrategy(context.get_node_id(), soft=False),
            )
            .remote()
        )
        return self.relay

    def cell_task_for(self, options: RayOptions, node_id: str | None, runtime_env: dict | None) -> Any:
        """The cell task with these options, made once per distinct options (``options()`` is not free)."""
        key = (
            options.num_cpus,
            options.num_gpus,
            options.memory,
            options.custom,
            options.retries,
            node_id,
            options.soft,
            json.dumps(runtime_env, sort_keys=True) if runtime_env else None,
        )
        task = self._tasks.get(key)
        if task is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            task_options = options.task_options(runtime_env)
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
            self._fits.clear()
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
        fits = (options, node_id)
        if self._nodes_at > time.monotonic() - _NODE_CACHE_SECONDS and fits in self._fits:
            return  # fitted the nodes as they are now known
        wanted = options.resources()
        for fresh in (False, True):
            nodes = [n for n in self.nodes(fresh) if node_id is None or options.soft or n["NodeID"] == node_id]
            if any(all(n["Resources"].get(k, 0.0) >= x for k, x in wanted.items()) for n in nodes):
                self._fits.add(fits)
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
        """Disconnect; stops the embedded Ray only (never a cluster we did not start). After a
        loss Ray is shut down whoever started it: the connection is dead, and Ray would end the
        kernel a minute later."""
        with self._lock:
            if not self.connected:
                return
            import ray

            self.connected = False
            if self._watch is not None:
                self._watch.stop()
            if not ray.is_initialized():  # Ray's own exit hook came first: nothing left to close
                self.output.close(0)
            elif self.lost is not None:
                ray.shutdown()  # first: it ends the pump's pull, which the dead cluster never answers
                self.output.close(_CANCEL_GRACE)
            else:
                ray.kill(self.relay)  # ends the pump's pending pull, so it never outlives the connection
                self.output.close(_CANCEL_GRACE)
                if self.owned:
                    ray.shutdown()
            self.lost = None
            self._closed.set()


class _Attempt:
    """One ``ray.init`` by address, in a thread of its own so that a deadline or an interrupt can
    give up on it; one that connects after it was given up on is disconnected at once."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.settled = threading.Event()  # finished, and disconnected again if given up on
        self._given_up = False
        self._lock = threading.Lock()
        threading.Thread(target=self._connect, daemon=True, name="jx-ray-connect").start()

    def join(self, timeout: float) -> None:
        """Connected within ``timeout``, or the error saying why not (an interrupt gives up too)."""
        try:
            in_time = self.finished.wait(timeout)
        except BaseException:  # an interrupt: nothing may stay connected behind the caller's back
            if not self._give_up() and self.error is None:
                import ray

                ray.shutdown()
            raise
        if not in_time and self._give_up():
            raise BackendUnavailableError(
                "ray",
                f"cannot connect to Ray at {self.address}: its GCS answered, but ray.init did not finish "
                f"within {timeout:g} s",
                "check the cluster with `ray status`; raise ExecConfig.ray_connect_timeout if it is just slow",
            )
        if self.error is not None:
            said = str(self.error).strip().splitlines()
            raise BackendUnavailableError(
                "ray",
                f"cannot connect to Ray at {self.address}: {said[0] if said else type(self.error).__name__}",
                "check the address (`ray status` on the head node prints it), or drop --address for a local Ray",
            ) from self.error

    def _give_up(self) -> bool:
        """True if given up on before it finished (else it finished: connected, or failed)."""
        with self._lock:
            self._given_up = not self.finished.is_set()
            return self._given_up

    def _connect(self) -> None:
        import ray

        try:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except BaseException as error:  # handed to the caller
            self.error = error
        with self._lock:
            self.finished.set()
            given_up = self._given_up
        if given_up and self.error is None:
            ray.shutdown()
        self.settled.set()


_connection = Connection()


def connection() -> Connection:
    return _connection


@contextlib.contextmanager
def _progress(say: Say, began: float) -> Iterator[None]:
    """While the block runs (``ray.init``, silent for 10-20 s), say every few seconds how long it has taken."""
    done = threading.Event()

    def tell() -> None:
        while not done.wait(_PROGRESS_EVERY):
            say(f"[jupyter-exec] local Ray still starting: {time.monotonic() - began:.0f} s so far\n")

    teller = threading.Thread(target=tell, name="jx-ray-start-progress", daemon=True)
    teller.start()
    try:
        yield
    finally:
        done.set()
        teller.join()
