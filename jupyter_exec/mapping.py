"""``jupyter_exec.map``: one function or cell over many inputs, on any backend, through the
kernel's Manager.

Items go in batches (about four per parallel slot), a progress line counts them, results
come back in order as data, and the map is recorded in the store (``%jx runs``, the side
panel): one row for the map with its item counts, and, on a backend that does not fan out
by itself, one for each batch. Every item runs even when some raise; then a ``MapError``
carries all the results and each failed item's error. Ray spreads the batches over its
cluster itself (``fanout`` in ``backends.raycluster``); elsewhere each batch is a run of
its own (``jupyter_exec.map_runs``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .backends.raycluster.options import RayOptions
from .current import current_manager
from .envs import EnvSpec
from .errors import MapError, SpecError
from .manager import Manager
from .map_runs import MapRequest, work_label
from .spec import CacheRequest, Limits, RunSpec, parse_env
from .trace.sweep import SweepNodes

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MapOptions", "map"]


class MapOptions(TypedDict, total=False):
    """``jupyter_exec.map``'s keywords (each optional), by what they decide."""

    # where each item runs, and with what (as %%sandbox's options say it)
    backend: str | None  # as --backend takes it (default ExecConfig.backend), or "ray"
    limits: Limits | Mapping[str, Any] | None  # a Limits or {"memory": "512m", "timeout": "30s", ...}
    env: dict[str, str] | None
    pip: list[str] | None
    working_dir: str | None
    trust: bool  # results may come back pickled (only for code you trust)
    name: str | None
    cache: bool  # an item run before with the same work, item and settings is not run again
    # how the items spread
    max_parallel: int | None  # batches at once (default: this machine's CPUs; on Ray what its CPUs take)
    batch_size: int | None  # items per sandbox (1: each its own)
    progress: bool  # the progress line on stderr
    return_exceptions: bool  # the errors stand in the returned list instead of a MapError
    # every item a node of an experiment trace
    trace: str | None
    parent: str | int | None  # as --parent takes it (default "latest")
    metric: str | None
    maximize: bool | None
    # where a Ray task runs, and what it reserves (backend="ray")
    address: str | None
    num_cpus: float | None
    num_gpus: float | None
    memory: str | int | None
    retries: int | None
    wait_for_resources: bool | None


_RAY = ("address", "num_cpus", "num_gpus", "memory", "retries", "wait_for_resources")


def map(work: Callable[[Any], Any] | str, items: Iterable[Any], **options: Unpack[MapOptions]) -> list[Any]:
    """``[work(item) for item in items]`` in sandboxes, results in order; ``work`` may also be
    cell code whose last expression is the result, with the item bound to ``item``.

    The options (``MapOptions``): ``backend`` as ``%%sandbox --backend`` takes it (default
    ``ExecConfig.backend``), or ``ray``; ``max_parallel`` batches at once (default: this
    machine's CPUs, or on Ray as many tasks as the cluster has CPUs for); ``limits`` (a
    ``Limits`` or ``{"memory": "512m", "timeout": "30s", ...}``) apply to each batch's run;
    ``batch_size=1`` gives every item a sandbox of its own. A function travels pickled
    (cloudpickle for one defined in the notebook, which the sandbox's Python then needs);
    results come back as data (pickled only with ``trust``). Items that raise do not stop the
    others: a ``MapError`` is raised at the end with ``.results`` and ``.errors``, or with
    ``return_exceptions`` the errors stand in the returned list. ``cache``: an item run before
    with the same work, item and settings comes from the cache of identical runs instead of
    running again (as ``--cache``). ``trace``: every item becomes a node of that experiment
    trace, under ``parent`` (as ``--parent`` takes it), its ``metric`` read from the item's
    result. ``address``, ``num_cpus``, ``num_gpus``, ``memory``, ``retries`` and
    ``wait_for_resources`` place Ray tasks (``backend="ray"``).
    """
    unknown = sorted(options.keys() - MapOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"map() got an unexpected keyword argument {unknown[0]!r}")
    manager = current_manager()
    spec, how = _spec(manager, options), _spreading(options)
    items = list(items)
    nodes = _trace_nodes(manager, work, items, options)
    if nodes is not None:
        how = dataclasses.replace(how, settled=nodes.settled)
    try:
        return manager.map(work, items, spec, how, return_exceptions=options.get("return_exceptions", False))
    except MapError:
        raise  # every item came in: its node is finished
    except BaseException as error:
        if nodes is not None:
            nodes.abandon(error)
        raise


def _spec(manager: Manager, options: MapOptions) -> RunSpec:
    """The run spec of each batch: where it runs and with what."""
    backend = options.get("backend") or manager.config.backend
    ray = {key: options[key] for key in _RAY if options.get(key) is not None}  # type: ignore[literal-required]
    if ray and backend != "ray":
        raise SpecError(
            f"map: {', '.join(ray)} place Ray tasks, and this map runs on {backend}; pass backend='ray', or drop them"
        )
    placement = None
    if backend == "ray":
        placement = RayOptions.parse(**{**ray, "address": ray.get("address") or manager.config.ray_address or None})
    limits = options.get("limits")
    pip, working_dir = options.get("pip"), options.get("working_dir")
    return RunSpec(
        backend=backend,
        limits=limits if isinstance(limits, Limits) else Limits.parse(**(limits or {})),
        env=parse_env([f"{k}={v}" for k, v in (options.get("env") or {}).items()]),
        trust=options.get("trust", False),
        name=options.get("name"),
        placement=placement,
        runtime_env=EnvSpec.from_options(base_dir=Path.cwd(), pip=pip, working_dir=working_dir)
        if pip or working_dir
        else None,
        cache=CacheRequest() if options.get("cache") else None,
    )


def _trace_nodes(
    manager: Manager, work: Callable[[Any], Any] | str, items: list[Any], options: MapOptions
) -> SweepNodes | None:
    """The items as nodes of the trace ``options`` names, if it names one."""
    trace = options.get("trace")
    if not trace:
        return None
    return SweepNodes(
        manager,
        trace,
        work_label(work),
        items,
        parent=options.get("parent", "latest"),
        metric=options.get("metric"),
        maximize=options.get("maximize"),
    )


def _spreading(options: MapOptions) -> MapRequest:
    """How the items spread: batches, parallel runs, the progress line."""
    for key in ("max_parallel", "batch_size"):
        value = options.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SpecError(f"map: {key} must be a whole number >= 1, got {value!r}")
    return MapRequest(
        options.get("batch_size"), options.get("max_parallel"), _progress if options.get("progress", True) else None
    )


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
