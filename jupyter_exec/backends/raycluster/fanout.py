"""``map`` on Ray: one function or cell over many items, in batches of tasks.

Items are sent in batches (one task per batch, so a thousand small items cost about
what a handful of tasks cost), at most ``max_in_flight`` tasks run at once, and the
results come back in the items' order, as data (the same tagged JSON a cell's result
travels as). An item that raises has its error kept beside the others' results
(``MapOutcome``); a task that dies is mapped by the same function as a single cell's
and ends the map.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from jupyter_exec.backends.base import MapOutcome, MapProgress
from jupyter_exec.runner.transfer import decode
from jupyter_exec.spec import RunSpec

from .connection import Connection, ray_runtime_env
from .errors import task_error
from .options import RayOptions

__all__ = ["fan_out"]


def fan_out(
    conn: Connection,
    work: Any,
    items: list[Any],
    options: RayOptions,
    spec: RunSpec,
    *,
    run_id: int | None,
    batch_size: int | None,
    max_in_flight: int | None,
    say: Callable[[str], None] | None,
) -> MapOutcome:
    """``work`` over ``items`` in batches, at most ``max_in_flight`` tasks at once; results in order."""
    import ray
    from ray.exceptions import RayError

    if not options.wait_for_resources:
        conn.check_feasible(options, None)
    total, trust = len(items), spec.trust
    if not total:
        return MapOutcome([])
    if max_in_flight is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        max_in_flight = max(1, int(cpus // options.num_cpus) if options.num_cpus else int(cpus))
    batch_size = batch_size or max(1, math.ceil(total / (max_in_flight * 4)))
    task = conn.batch_task.options(
        num_cpus=options.num_cpus,
        num_gpus=options.num_gpus,
        max_retries=options.retries,
        runtime_env=ray_runtime_env(spec),
        **({"memory": options.memory} if options.memory else {}),
    )
    work_ref = ray.put(work)
    starts = list(range(0, total, batch_size))
    outcome = MapOutcome([None] * total)
    in_flight: dict[Any, int] = {}
    progress = MapProgress(total, say)
    try:
        while starts or in_flight:
            while starts and len(in_flight) < max_in_flight:
                start = starts.pop(0)
                in_flight[task.remote(work_ref, items[start : start + batch_size], start, trust)] = start
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                start = in_flight.pop(ref)
                try:
                    batch = json.loads(ray.get(ref))
                except RayError as error:
                    raise task_error(error, run_id, what=f"the map task for items {start}..") from error
                outcome.add(start, batch, lambda encoded: decode(encoded, trust), run_id)
                progress.advance(len(batch["results"]))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    return outcome
