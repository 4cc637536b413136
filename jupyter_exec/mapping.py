"""``jupyter_exec.map``: one function or cell over many inputs, on any backend, through the
kernel's Manager.

Items go in batches (about four per parallel slot), a progress line counts them, results
come back in order as data, and the map is recorded in the store (``%jx runs``, the side
panel): one row for the map with its item counts, and, on a backend that does not fan out
by itself, one for each batch. Every item runs even when some raise; then a ``MapError``
carries all the results and each failed item's error. Ray spreads the batches over its
cluster itself (``fanout`` in ``backends.raycluster``); elsewhere each batch is a run of
its own (``jupyter_exec.fanout``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .backends.raycluster.options import RayOptions
from .envs import EnvSpec
from .errors import MapError, SpecError
from .fanout import MapRequest, work_label
from .session import current_manager
from .spec import CacheRequest, Limits, RunSpec, parse_env
from .trace.sweep import SweepNodes

__all__ = ["map"]

_RAY_ONLY = ("address", "num_cpus", "num_gpus", "memory", "retries", "wait_for_resources")


def map(
    work: Callable[[Any], Any] | str,
    items: Iterable[Any],
    *,
    backend: str | None = None,
    max_parallel: int | None = None,
    batch_size: int | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    env: dict[str, str] | None = None,
    pip: list[str] | None = None,
    working_dir: str | None = None,
    trust: bool = False,
    return_exceptions: bool = False,
    cache: bool = False,
    trace: str | None = None,
    parent: str | int | None = "latest",
    metric: str | None = None,
    maximize: bool | None = None,
    name: str | None = None,
    progress: bool = True,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: str | int | None = None,
    retries: int | None = None,
    wait_for_resources: bool | None = None,
) -> list[Any]:
    """``[work(item) for item in items]`` in sandboxes, results in order; ``work`` may also be
    cell code whose last expression is the result, with the item bound to ``item``.

    ``backend`` as ``%%sandbox --backend`` takes it (default ``ExecConfig.backend``), or
    ``ray``; ``max_parallel`` batches at once (default: this machine's CPUs, or on Ray as many
    tasks as the cluster has CPUs for); ``limits`` (a ``Limits`` or ``{"memory": "512m",
    "timeout": "30s", ...}``) apply to each batch's run; ``batch_size=1`` gives every item a
    sandbox of its own. A function travels pickled (cloudpickle for one defined in the
    notebook, which the sandbox's Python then needs); results come back as data (pickled only
    with ``trust``). Items that raise do not stop the others: a ``MapError`` is raised at the
    end with ``.results`` and ``.errors``, or with ``return_exceptions`` the errors stand in
    the returned list. ``cache``: an item run before with the same work, item and settings
    comes from the cache of identical runs instead of running again (as ``--cache``).
    ``trace``: every item becomes a node of that experiment trace, under ``parent`` (as
    ``--parent`` takes it), its ``metric`` read from the item's result. ``address``,
    ``num_cpus``, ``num_gpus``, ``memory``, ``retries`` and ``wait_for_resources`` place Ray
    tasks (``backend="ray"``).
    """
    manager = current_manager()
    chosen = backend or manager.config.backend
    ray_options = {
        key: value
        for key, value in {
            "address": address,
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "memory": memory,
            "retries": retries,
            "wait_for_resources": wait_for_resources,
        }.items()
        if value is not None
    }
    if ray_options and chosen != "ray":
        raise SpecError(
            f"map: {', '.join(ray_options)} place Ray tasks, and this map runs on {chosen}; "
            "pass backend='ray', or drop them"
        )
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise SpecError(f"map: max_parallel must be a whole number >= 1, got {max_parallel!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise SpecError(f"map: batch_size must be a whole number >= 1, got {batch_size!r}")
    placement = None
    if chosen == "ray":
        placement = RayOptions.parse(**{**ray_options, "address": address or manager.config.ray_address or None})
    runtime_env = (
        EnvSpec.from_options(base_dir=Path.cwd(), pip=pip, working_dir=working_dir) if pip or working_dir else None
    )
    spec = RunSpec(
        backend=chosen,
        limits=limits if isinstance(limits, Limits) else Limits.parse(**(limits or {})),
        env=parse_env([f"{k}={v}" for k, v in (env or {}).items()]),
        trust=trust,
        name=name,
        placement=placement,
        runtime_env=runtime_env,
        cache=CacheRequest() if cache else None,
    )
    items = list(items)
    nodes = (
        SweepNodes(manager, trace, work_label(work), items, parent=parent, metric=metric, maximize=maximize)
        if trace
        else None
    )
    how = MapRequest(batch_size, max_parallel, _progress if progress else None, nodes.settled if nodes else None)
    try:
        return manager.map(work, items, spec, how, return_exceptions=return_exceptions)
    except MapError:
        raise  # every item came in: its node is finished
    except BaseException as error:
        if nodes is not None:
            nodes.abandon(error)
        raise


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
