"""``Manager.map``: one function or cell over many items, on any backend.

The map is recorded as one run whose details count its items. With ``cache``, each
item has a key of its own (the work's pickled bytes or code, the item's, and what a
run's key covers besides) and an item found in the cache of identical runs never runs
again; those that succeed are kept. The rest go to the backend: Ray spreads them itself
(``fans_out``); elsewhere they go in batches, each batch one run through
``Manager.run`` — recorded, limited, sandboxed, cancellable — whose request carries the
work (a function, pickled as ``--in`` values are, or cell code that sees ``item``) and
its items; the bootstrap applies the work to each item and sends every result, or the
item's error, back as data. At most ``max_parallel`` batches run at once, in threads of
this process. The items of one batch share its sandbox, one after the other;
``batch_size=1`` gives every item a fresh one. A batch that fails as a whole (timeout,
out of memory, cancelled) gives its error to each of its items. Every item runs; then a
``MapError`` carries all results and each failed item's error.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .admission import AdmittedSpec
from .backends.base import ExecutorBackend, MapOutcome
from .backends.runs import MapProgress
from .cache import CacheEntries, NotCacheable, digest
from .errors import MapError, RemoteError, TaskError, TransferError, describe_error, status_of
from .events import EventCallback, RunEvent, RunResult
from .runner.bootstrap import MAP_INPUT, encode
from .runner.codec import Untransferable
from .runner.protocol import OutputSink
from .runner.transfer import decode
from .spec import RunSpec
from .status import Status
from .store.records import RunRecords, batch_name

__all__ = ["MapHost", "MapRequest", "batch_size_for", "map_in_runs", "run_map", "work_label"]


class MapHost(Protocol):
    """What a map needs of the Manager: admission, the record, the cache, and runs for its batches."""

    records: RunRecords
    cache: CacheEntries

    def admitted(self, spec: RunSpec) -> tuple[ExecutorBackend, AdmittedSpec]: ...

    def record(self, code: str, spec: RunSpec, backend: ExecutorBackend, name: str | None) -> int: ...

    def cache_key(self, code: str, inputs: str | None, spec: AdmittedSpec, backend: ExecutorBackend) -> str: ...

    def run(
        self, code: str, spec: RunSpec, *, namespace: Mapping[str, Any], sink: OutputSink, on_event: EventCallback
    ) -> RunResult: ...

    def cancel(self, run_id: int) -> bool: ...


@dataclass(frozen=True)
class MapRequest:
    """How to spread a map: ``batch_size`` items per run (None: about four batches per slot),
    ``max_parallel`` runs at once (None: the machine's CPUs, or what Ray has room for),
    ``progress`` where the progress line goes, and ``settled(index, result, error)`` called
    as each item comes in (a trace records its nodes so)."""

    batch_size: int | None = None
    max_parallel: int | None = None
    progress: Callable[[str], None] | None = None
    settled: Callable[[int, Any, BaseException | None], None] | None = None


def batch_size_for(total: int, max_parallel: int) -> int:
    """About four batches per parallel slot: few start-ups, and the last batches still spread."""
    return max(1, math.ceil(total / (max_parallel * 4)))


def work_label(work: Callable[[Any], Any] | str) -> str:
    """What a map runs, for its record: the code itself, or ``map(NAME)`` for a function."""
    return work if isinstance(work, str) else f"map({getattr(work, '__qualname__', type(work).__name__)})"


def run_map(
    manager: MapHost, work: Callable[[Any], Any] | str, items: list[Any], spec: RunSpec, how: MapRequest
) -> tuple[int, MapOutcome]:
    """``work`` over ``items`` as ``spec`` and ``how`` say, recorded as one map run: its id and
    outcome (a ``MapError`` is the caller's to raise)."""
    backend, spec = manager.admitted(spec)
    keys = _item_keys(manager, work, items, spec, backend, how.progress) if spec.cache else None
    run_id = manager.record(work_label(work), spec, backend, spec.name or "map")
    manager.records.mark_running(run_id, None)
    outcome = MapOutcome([None] * len(items))
    if how.settled is not None:
        settled = how.settled
        outcome.settled = lambda index: settled(index, outcome.results[index], outcome.errors.get(index))
    hits = _served(manager, keys, outcome, spec.trust)
    todo = [i for i in range(len(items)) if i not in hits]
    if hits and how.progress is not None:
        how.progress(f"[jupyter-exec] map: {len(hits)} of {len(items)} items from the cache\n")
    details: dict[str, Any] = {"items": len(items), "cached": len(hits)}
    try:
        if todo:
            done = _spread(manager, backend, work, [items[i] for i in todo], spec, how, run_id)
            for position, index in enumerate(todo):
                if position in done.errors:
                    outcome.fail(index, done.errors[position])
                else:
                    outcome.succeed(index, done.results[position])
    except BaseException as error:
        manager.records.finish_run(run_id, status_of(error), error=describe_error(error), details=details)
        raise
    if keys is not None:
        _keep(manager, keys, outcome, todo, run_id, backend, work_label(work), spec.trust)
    details.update(succeeded=len(items) - len(outcome.errors), failed=len(outcome.errors))
    if outcome.errors:
        failure = MapError(outcome.results, dict(sorted(outcome.errors.items())), run_id)
        manager.records.finish_run(run_id, Status.FAILED, error=describe_error(failure), details=details)
    else:
        manager.records.finish_run(run_id, Status.CACHED if not todo and items else Status.SUCCEEDED, details=details)
    return run_id, outcome


def _item_keys(
    manager: MapHost,
    work: Callable[[Any], Any] | str,
    items: list[Any],
    spec: AdmittedSpec,
    backend: ExecutorBackend,
    progress: Callable[[str], None] | None,
) -> list[str] | None:
    """Each item's key in the cache of identical runs; None (said on the progress line's stream)
    when the map cannot be cached."""
    import cloudpickle

    try:
        code = work if isinstance(work, str) else f"map:{digest(cloudpickle.dumps(work))}"
        base = manager.cache_key(f"map\0{code}", None, spec, backend)
        return [digest(f"{base}\0{digest(cloudpickle.dumps(item))}") for item in items]
    except NotCacheable as why:
        reason = str(why)
    except Exception as error:  # what the key needs cannot be read now: the map just runs
        reason = f"cannot tell what it depends on ({type(error).__name__}: {error})"
    if progress is not None:
        progress(f"[jupyter-exec] cache=True: not cached: {reason}\n")
    return None


def _served(manager: MapHost, keys: list[str] | None, outcome: MapOutcome, trust: bool) -> set[int]:
    """The items found in the cache, their results filled in."""
    served = set()
    for index, key in enumerate(keys or ()):
        hit = manager.cache.get(key)
        if hit is not None:
            try:
                outcome.succeed(index, decode(hit.value, trust))
            except TransferError:
                continue  # it runs again
            served.add(index)
    return served


def _keep(
    manager: MapHost,
    keys: list[str],
    outcome: MapOutcome,
    ran: list[int],
    run_id: int,
    backend: ExecutorBackend,
    code: str,
    trust: bool,
) -> None:
    """Each item that ran and succeeded, kept under its key (as data; a pickle only with ``trust``)."""
    entries = []
    for index in ran:
        if index not in outcome.errors:
            try:
                entries.append((keys[index], {"value": encode(outcome.results[index], trust)}))
            except Untransferable:
                continue
    manager.cache.put_many(entries, run_id, backend.name, code, trust)


def _spread(
    manager: MapHost,
    backend: ExecutorBackend,
    work: Callable[[Any], Any] | str,
    items: list[Any],
    spec: AdmittedSpec,
    how: MapRequest,
    run_id: int,
) -> MapOutcome:
    if backend.fans_out:
        return backend.map(
            work,
            items,
            spec,
            run_id=run_id,
            batch_size=how.batch_size,
            max_parallel=how.max_parallel,
            progress=how.progress,
        )
    return map_in_runs(manager, work, items, spec, map_id=run_id, how=how)


class _Silent:
    """The items' output goes to their batch's log (``%jx logs N``), not into the cell."""

    def output(self, stream: str, text: str) -> None:
        pass

    def display(self, bundle: dict[str, str]) -> None:
        pass


def map_in_runs(
    manager: MapHost,
    work: Callable[[Any], Any] | str,
    items: list[Any],
    spec: AdmittedSpec,
    *,
    map_id: int,
    how: MapRequest,
) -> MapOutcome:
    """``work`` over ``items`` in batches of runs named ``map MAP_ID[START:END]``; results in order.

    An interrupt cancels every batch still going (nothing is left running) and is re-raised;
    an error that is not a run's own (a refused spec, a backend that cannot start) stops the
    map and is raised."""
    total = len(items)
    outcome = MapOutcome([None] * total)
    parallel = how.max_parallel or os.cpu_count() or 1
    size = how.batch_size or batch_size_for(total, parallel)
    spec = replace(spec, inputs=(MAP_INPUT,), outputs=(), cache=None)
    counter = MapProgress(total, how.progress)
    started: dict[int, int] = {}  # batch start -> its run id, once recorded
    stopping = threading.Event()
    lock = threading.Lock()
    code = work_label(work)

    def run_batch(start: int) -> RunResult:
        batch = items[start : start + size]

        def created(event: RunEvent) -> None:
            if event["kind"] == "created":
                with lock:
                    started[start] = event["run_id"]
                if stopping.is_set():  # recorded just as the map was stopped
                    manager.cancel(event["run_id"])

        return manager.run(
            code,
            replace(spec, name=batch_name(map_id, start, start + len(batch))),
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
        elif isinstance(error, TransferError) and isinstance(error, RemoteError):
            raise TransferError(  # the work or the items could not be loaded: every batch would fail so
                f"the map stopped after its first batch, as every batch would fail the same way: {error.remote_message}"
            ) from None
        elif isinstance(error, TaskError):  # the batch as a whole: each of its items
            for index in range(start, start + count):
                outcome.fail(index, error)
        else:
            raise error
        counter.advance(count, outcome.failed_among(start, count))

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
