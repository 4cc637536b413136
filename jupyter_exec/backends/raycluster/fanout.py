"""``map`` on Ray: one function or cell over many items, in batches of tasks.

Items are sent in batches (one task per batch, so a thousand small items cost about
what a handful of tasks cost), at most ``max_in_flight`` tasks run at once, and the
results come back in the items' order, as data (the same tagged JSON a cell's result
travels as). An item that raises has its error kept beside the others' results
(``MapOutcome``). A fault outside the items' code (a worker or node died, the cluster
went away) ends only the batches it hit, as a single cell's would end (``task_error``;
``--retries`` lets Ray run them again): each of their items gets that ``NodeFailedError``,
the other batches finish, and nothing more starts once the cluster is gone. A fault that
is not the node's (every batch would hit it: a bad runtime env) ends the map.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from jupyter_exec.backends.base import MapOutcome
from jupyter_exec.backends.runs import MapProgress
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.transfer import decode, kernel_reads_arrow
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
    total, trust, arrow = len(items), spec.trust, kernel_reads_arrow()
    if not total:
        return MapOutcome([])
    if max_in_flight is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        max_in_flight = max(1, int(cpus // options.num_cpus) if options.num_cpus else int(cpus))
    batch_size = batch_size or max(1, math.ceil(total / (max_in_flight * 4)))
    task = conn.batch_task.options(**options.task_options(ray_runtime_env(spec)))
    work_ref = ray.put(work)
    starts = list(range(0, total, batch_size))
    outcome = MapOutcome([None] * total)
    in_flight: dict[Any, int] = {}
    progress = MapProgress(total, say)
    lost: list[str] = []
    key = run_id if run_id is not None else id(outcome)

    def end(why: str) -> None:  # the cluster went away: stop waiting for it
        lost.append(why)
        for ref in list(in_flight):
            ray.cancel(ref, force=True)

    def fail_batch(start: int, error: BaseException) -> None:
        stop = min(start + batch_size, total)
        for index in range(start, stop):
            outcome.fail(index, error)
        progress.advance(stop - start, stop - start)

    conn.track(key, end)
    try:
        while starts or in_flight:
            while starts and not lost and len(in_flight) < max_in_flight:
                start = starts.pop(0)
                in_flight[task.remote(work_ref, items[start : start + batch_size], start, trust, arrow)] = start
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                start = in_flight.pop(ref)
                try:
                    batch = json.loads(ray.get(ref))
                except RayError as error:
                    what = f"the map task for items {start}..{min(start + batch_size, total) - 1}"
                    fault = task_error(error, run_id, lost=lost[0] if lost else None, what=what)
                    if not isinstance(fault, NodeFailedError):  # not the node's fault: every batch would fail
                        raise fault from error
                    fail_batch(start, fault)
                    continue
                outcome.add(start, batch, lambda encoded: decode(encoded, trust), run_id)
                progress.advance(len(batch["results"]), outcome.failed_among(start, len(batch["results"])))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    finally:
        conn.untrack(key)
    for start in starts:  # never started: the cluster went away first
        fail_batch(start, NodeFailedError(f"{lost[0]} before items {start}.. could start", run_id=run_id))
    return outcome
