"""``map`` on the backends that do not fan out by themselves (seccomp, local, docker):
batches of items, each batch one run through ``Manager.run``.

A batch is an ordinary run — recorded, limited, sandboxed, cancellable — whose request
carries the work (a function, pickled as ``--in`` values are, or cell code that sees
``item``) and its items; the bootstrap applies the work to each item and sends every
result, or the item's error, back as data. At most ``max_parallel`` batches run at once,
in threads of this process. The items of one batch share its sandbox, one after the
other; ``batch_size=1`` gives every item a fresh one. A batch that fails as a whole
(timeout, out of memory, cancelled) gives its error to each of its items.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .backends.base import MapOutcome, MapProgress
from .errors import TaskError
from .runner.bootstrap import MAP_INPUT
from .spec import RunSpec

if TYPE_CHECKING:
    from .manager import Manager, RunResult

__all__ = ["batch_size_for", "map_in_runs", "work_label"]


def batch_size_for(total: int, max_parallel: int) -> int:
    """About four batches per parallel slot: few start-ups, and the last batches still spread."""
    return max(1, math.ceil(total / (max_parallel * 4)))


def work_label(work: Callable[[Any], Any] | str) -> str:
    """What a map runs, for its record: the code itself, or ``map(NAME)`` for a function."""
    return work if isinstance(work, str) else f"map({getattr(work, '__qualname__', type(work).__name__)})"


class _Silent:
    """The items' output goes to their batch's log (``%jx logs N``), not into the cell."""

    def output(self, stream: str, text: str) -> None:
        pass

    def display(self, bundle: dict[str, str]) -> None:
        pass


def map_in_runs(
    manager: Manager,
    work: Callable[[Any], Any] | str,
    items: list[Any],
    spec: RunSpec,
    *,
    name: str,
    batch_size: int | None,
    max_parallel: int | None,
    progress: Callable[[str], None] | None,
) -> MapOutcome:
    """``work`` over ``items`` in batches of runs named ``name[START:END]``; results in order.

    An interrupt cancels every batch still going (nothing is left running) and is re-raised;
    an error that is not a run's own (a refused spec, a backend that cannot start) stops the
    map and is raised."""
    total = len(items)
    outcome = MapOutcome([None] * total)
    if not total:
        return outcome
    parallel = max_parallel or os.cpu_count() or 1
    size = batch_size or batch_size_for(total, parallel)
    spec = replace(spec, inputs=(MAP_INPUT,), outputs=())
    counter = MapProgress(total, progress)
    started: dict[int, int] = {}  # batch start -> its run id, once recorded
    stopping = threading.Event()
    lock = threading.Lock()
    code = work_label(work)

    def run_batch(start: int) -> RunResult:
        batch = items[start : start + size]

        def created(kind: str, data: dict[str, Any]) -> None:
            if kind == "created":
                with lock:
                    started[start] = data["run_id"]
                if stopping.is_set():  # recorded just as the map was stopped
                    manager.cancel(data["run_id"])

        return manager.run(
            code,
            replace(spec, name=f"{name}[{start}:{start + len(batch)}]"),
            namespace={MAP_INPUT: {"work": work, "items": batch, "start": start}},
            sink=_Silent(),
            on_event=created,
        )

    def settle(start: int, future: Future[RunResult]) -> None:
        count = min(size, total - start)
        error = future.exception()
        if error is None:
            result = future.result()
            outcome.add(start, result.value, lambda value: value, result.run_id)
        elif isinstance(error, TaskError):  # the batch as a whole: each of its items
            for index in range(start, start + count):
                outcome.errors[index] = error
        else:
            raise error
        counter.advance(count)

    starts = list(range(0, total, size))
    running: dict[Future[RunResult], int] = {}
    with ThreadPoolExecutor(parallel, thread_name_prefix="jx-map") as pool:
        try:
            while starts or running:
                while starts and len(running) < parallel:
                    start = starts.pop(0)
                    running[pool.submit(run_batch, start)] = start
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    settle(running.pop(future), future)
        except BaseException:
            stopping.set()
            with lock:
                ids = [started[s] for s in running.values() if s in started]
            for run_id in ids:
                manager.cancel(run_id)
            for future in running:
                future.cancel()
            wait(running)
            raise
    return outcome
