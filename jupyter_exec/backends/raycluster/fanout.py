"""``map`` on Ray: one function or cell over many items, in batches of tasks.

Items are sent in batches (one task per batch, so a thousand small items cost about
what a handful of tasks cost), at most ``max_in_flight`` tasks run at once, and the
results come back in the items' order, as data (the same tagged JSON a cell's result
travels as). The first item that raises stops the map and its error is raised, naming
the item. A fault outside the items' code (a worker or node died, the cluster went away)
ends only the batches it hit, as a single cell's would end (``task_error``; ``--retries``
lets Ray run them again): the other batches finish, and the ``NodeFailedError`` raised at
the end names the items without a result and carries all the results that came back.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from jupyter_exec.errors import NodeFailedError, TransferError, remote_error
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
) -> list[Any]:
    """``work`` over ``items`` in batches, at most ``max_in_flight`` tasks at once; results in order."""
    import ray
    from ray.exceptions import RayError

    if not options.wait_for_resources:
        conn.check_feasible(options, None)
    total, trust = len(items), spec.trust
    if not total:
        return []
    if max_in_flight is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        max_in_flight = max(1, int(cpus // options.num_cpus) if options.num_cpus else int(cpus))
    batch_size = batch_size or max(1, math.ceil(total / (max_in_flight * 4)))
    task = conn.batch_task.options(**options.task_options(ray_runtime_env(spec)))
    work_ref = ray.put(work)
    starts = list(range(0, total, batch_size))
    results: list[Any] = [None] * total
    in_flight: dict[Any, int] = {}
    faults: list[tuple[int, int, NodeFailedError]] = []  # items whose task died, and how
    lost: list[str] = []
    key = run_id if run_id is not None else id(results)

    def end(why: str) -> None:  # the cluster went away: stop waiting for it
        lost.append(why)
        for ref in list(in_flight):
            ray.cancel(ref, force=True)

    conn.track(key, end)
    done, shown = 0, 0.0
    try:
        while starts or in_flight:
            while starts and not lost and len(in_flight) < max_in_flight:
                start = starts.pop(0)
                in_flight[task.remote(work_ref, items[start : start + batch_size], start, trust)] = start
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                start = in_flight.pop(ref)
                stop = min(start + batch_size, total)
                try:
                    batch = json.loads(ray.get(ref))
                except RayError as error:
                    what = f"the map task for items {start}..{stop - 1}"
                    fault = task_error(error, run_id, lost=lost[0] if lost else None, what=what)
                    if not isinstance(fault, NodeFailedError):  # not the node's fault: every batch would fail
                        raise fault from error
                    faults.append((start, stop, fault))
                    continue
                _raise_batch_error(batch)
                for offset, encoded in enumerate(batch["results"]):
                    results[start + offset] = decode(encoded, trust)
                done += len(batch["results"])
            if say and (time.monotonic() - shown > 0.2 or done == total):
                shown = time.monotonic()
                say(f"\r[jupyter-exec] map: {done}/{total} items" + ("\n" if done == total else ""))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    finally:
        conn.untrack(key)
    if faults or starts:
        raise _unfinished(results, done, faults, starts, batch_size, total, run_id)
    return results


def _unfinished(
    results: list[Any],
    done: int,
    faults: list[tuple[int, int, NodeFailedError]],
    never_started: list[int],
    batch_size: int,
    total: int,
    run_id: int | None,
) -> NodeFailedError:
    """One error for the items a fault took (their task died, or never ran once the cluster went),
    carrying the results of every item that finished."""
    spans = [(start, stop) for start, stop, _ in faults] + [(s, min(s + batch_size, total)) for s in never_started]
    named = ", ".join(f"{a}..{b - 1}" if b - a > 1 else str(a) for a, b in sorted(spans)[:5])
    more = f" and {len(spans) - 5} more spans" if len(spans) > 5 else ""
    cause = faults[0][2] if faults else None
    error = NodeFailedError(
        f"map: items {named}{more} have no result ({total - done} of {total}): "
        f"{cause if cause is not None else 'the cluster went away'}; the {done} results that came back "
        "are in this error's .results (None for the others)",
        run_id=run_id,
    )
    error.results = results
    return error


def _raise_batch_error(batch: dict[str, Any]) -> None:
    if "untransferable" in batch:
        raise TransferError(
            f"map: {batch['untransferable']} and cannot come back as data; "
            "return data, or pass trust=True to pickle it (only for code you trust)"
        )
    if "error" in batch:
        described = batch["error"]
        raise remote_error(described["type"], f"item {batch['index']}: {described['message']}", described["traceback"])
