"""``explore``: let a scheduler grow a trace, running K children at a time on a backend.

``propose(parent)`` writes the code of a child (``parent`` is None for a new root). Each
child runs through ``Manager.run`` like any cell — recorded, limited, sandboxed — in a
worker thread; the main thread alone records nodes and asks the scheduler, holding the
trace's lock while it does, since cells in the background and maps may grow the same
trace meanwhile (the scheduler catches up with their nodes from the trace's log). The
trace lives in the store, so calling ``explore`` again (after a kernel restart, say)
carries on from what is there.

What shows the trace live is handed in, never imported from the notebook's side: a
``Viewer`` given to ``explore``, else the one ``%load_ext jupyter_exec`` installs with
``show_traces_with`` (the tree widget, where a widget frontend is attached).
"""

from __future__ import annotations

import functools
import numbers
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import replace
from typing import Any, Protocol

from jupyter_exec.current import current_manager
from jupyter_exec.errors import SpecError, TaskError, describe_error, status_of
from jupyter_exec.manager import Manager, RunResult
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.status import Status

from .model import Node, Trace
from .schedulers import MCTS, Scheduler
from .states import NodeStates, StateBudget
from .tables import TraceTables
from .timer import Timer

__all__ = [
    "TraceView",
    "Viewer",
    "explore",
    "metrics_of",
    "record_outcome",
    "record_value",
    "resolve_parent",
    "run_in_trace",
    "show_traces_with",
    "trace_tables",
]

Proposal = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]


class TraceView(Protocol):
    """What shows a trace live (the tree widget is one): redrawn as ``explore`` grows it, at
    most every ``min_interval`` seconds."""

    def refresh(self, *, min_interval: float = 0.0) -> None: ...


#: Shows ``trace`` (of that Manager's store) and returns its view; None where it cannot be shown.
Viewer = Callable[[Trace, Manager], TraceView | None]

_tables: dict[str, TraceTables] = {}
_live: weakref.WeakKeyDictionary[Trace, TraceView] = weakref.WeakKeyDictionary()
_viewer: Viewer | None = None  # what shows a trace when explore is given none
_lock = threading.Lock()


def show_traces_with(viewer: Viewer | None) -> None:
    """Make ``viewer`` show what ``explore`` grows when it is given no viewer of its own (the
    extension installs the tree widget's when it loads, and None when it unloads)."""
    global _viewer
    _viewer = viewer


def trace_tables(manager: Manager) -> TraceTables:
    """The trace tables in ``manager``'s store file, opened once per process."""
    key = str(manager.records.path)
    with _lock:
        if key not in _tables:
            _tables[key] = TraceTables(manager.records.path)
        return _tables[key]


def metrics_of(value: Any, outputs: Mapping[str, Any], metric: str) -> dict[str, float]:
    """Numbers from a run: a numeric last value is ``metric``; a dict's numbers and numeric --out values by name."""
    found: dict[str, float] = {}
    sources: list[Mapping[Any, Any]] = [outputs]
    if isinstance(value, Mapping):
        sources.insert(0, value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        found[metric] = float(value)
    for source in sources:
        found.update(
            {str(k): float(v) for k, v in source.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        )
    return found


def record_outcome(
    tables: TraceTables, trace: Trace, node: Node, result: RunResult | None, error: BaseException | None
) -> Node:
    """Finish ``node`` from its run: a run that succeeded without the metric counts as failed."""
    if error is not None:
        return tables.finish(
            trace, node, status_of(error), error=describe_error(error), run_id=getattr(error, "run_id", None)
        )
    assert result is not None
    return record_value(tables, trace, node, result.value, result.outputs, result.run_id)


def record_value(
    tables: TraceTables, trace: Trace, node: Node, value: Any, outputs: Mapping[str, Any], run_id: int | None
) -> Node:
    """Finish ``node`` from what its run brought back: without the metric it counts as failed."""
    metrics = metrics_of(value, outputs, trace.metric)
    missing = (
        None
        if trace.metric in metrics
        else (f"the run's result has no number {trace.metric!r}; end the cell with e.g. {{'{trace.metric}': 0.93}}")
    )
    return tables.finish(
        trace, node, Status.FAILED if missing else Status.SUCCEEDED, metrics, error=missing, run_id=run_id
    )


def resolve_parent(trace: Trace, ref: str | int | None) -> int | None:
    """``root`` → a new root; ``best`` / ``latest`` → that SOTA node (a new root if none); or a node id."""
    if ref is None or ref == "root":
        return None
    if ref in ("best", "latest"):
        sota = trace.sota(ref)  # type: ignore[arg-type]
        return sota.id if sota else None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        if int(ref) not in trace.nodes:
            raise SpecError(f"trace {trace.name!r} has no node {ref}; `%jx tree {trace.name}` lists them")
        return int(ref)
    raise SpecError(f"--parent: {ref!r} is not a node id, best, latest or root")


def run_in_trace(
    manager: Manager,
    code: str,
    spec: RunSpec,
    *,
    trace: str,
    parent: str | int | None = "latest",
    metric: str | None = None,
    maximize: bool | None = None,
    from_state: bool = False,
    **run_options: Any,
) -> RunResult:
    """``manager.run`` that also records the run as a node of ``trace`` (``%%sandbox --trace``).

    ``parent`` is a node id, ``best``, ``latest`` (the default: carry on the current line)
    or ``root``. The run's errors are re-raised once the node is finished. A cell with
    ``spec.session`` records its session as the node's state; with ``from_state`` the cell
    runs in a fork of its parent's state (``states``).
    """
    tables = trace_tables(manager)
    model = tables.open(trace, metric, maximize)
    with model.lock:  # the parent chosen and the node added at once, whatever else grows the trace
        node = tables.add(model, resolve_parent(model, parent), code, spec=spec.describe())
    states = _cell_states(manager, model, spec)
    try:
        if from_state:
            result = states.run(node, code, spec, **run_options)
        else:
            result = manager.run(code, spec, **run_options)
            if spec.session is not None:
                states.keep(node.id, spec.session, made_here=False)
    except BaseException as error:
        record_outcome(tables, model, node, None, error)
        raise
    record_outcome(tables, model, node, result, None)
    return result


_cell_states_by_trace: dict[tuple[int, str], NodeStates] = {}


def _cell_states(manager: Manager, trace: Trace, spec: RunSpec) -> NodeStates:
    """The node states of ``trace`` that ``--trace`` cells of ``manager`` grow, kept across cells."""
    key = (id(manager), trace.name)
    with _lock:
        if key not in _cell_states_by_trace:
            _cell_states_by_trace[key] = _node_states(manager, trace, replace(spec, session=None, fork=None))
        return _cell_states_by_trace[key]


class _Silent:
    """Children's output goes to their logs only (``%jx logs N``), not into the cell."""

    def output(self, stream: str, text: str) -> None:
        pass

    def display(self, bundle: dict[str, str]) -> None:
        pass


def _proposal(proposed: Proposal) -> tuple[str, dict[str, Any]]:
    if isinstance(proposed, str):
        return proposed, {}
    if isinstance(proposed, tuple) and len(proposed) == 2 and isinstance(proposed[0], str):
        return proposed[0], dict(proposed[1])
    if isinstance(proposed, Mapping) and isinstance(proposed.get("code"), str):
        return proposed["code"], dict(proposed.get("params") or {})
    raise SpecError(
        f"propose() must return code, (code, params) or {{'code': ..., 'params': ...}}; got {type(proposed).__name__}"
    )


def _follow(trace: Trace, manager: Manager, viewer: Viewer | None) -> None:
    """Show ``trace`` with ``viewer`` (else the installed one), kept current by ``_progress``;
    nothing where there is no viewer or it cannot show it here: the text line alone."""
    viewer = viewer or _viewer
    if viewer is not None and (view := viewer(trace, manager)) is not None:
        _live[trace] = view


def _progress(trace: Trace, budget: int | None, running: int, end: str = "") -> None:
    if (view := _live.get(trace)) is not None:
        view.refresh(min_interval=0.0 if end else 0.5)
    best = trace.sota()
    shown = f"best {trace.metric}={best.metrics[trace.metric]:.6g} (node {best.id})" if best else "no success yet"
    total = budget if budget is not None else "?"
    sys.stdout.write(
        f"\rexplore {trace.name!r}: {trace.finished_count}/{total} done, {running} running · {shown}   {end}"
    )
    sys.stdout.flush()


def explore(
    propose: Callable[[Node | None], Proposal],
    *,
    budget: int | None = None,
    time_budget: str | float | None = None,
    scheduler: Scheduler | None = None,
    max_parallel: int = 1,
    backend: str = "auto",
    limits: Limits | Mapping[str, Any] | None = None,
    trace: str = "explore",
    metric: str | None = None,
    maximize: bool | None = None,
    manager: Manager | None = None,
    progress: bool = True,
    viewer: Viewer | None = None,
    from_state: bool = False,
) -> Trace:
    """Grow trace ``trace`` until it holds ``budget`` nodes or ``time_budget`` runs out.

    ``budget`` counts the nodes already stored (those a dead kernel left unfinished
    included), so a second call after a restart finishes the job rather than starting it
    again. ``propose(parent)`` returns the child's code, ``(code, params)`` or
    ``{"code": ..., "params": ...}``; the child's cell ends with a number or a dict holding
    ``metric`` (for a new trace ``score``, maximised; a stored trace keeps its own). No run
    starts after the time budget and runs still going are cancelled. The default
    scheduler is ``MCTS`` with one root. With ``progress``, a line of text follows the trace,
    and ``viewer`` (default: the tree widget, in a notebook with the extension loaded) shows it.
    With ``from_state``, each child runs in a fork of its parent's live session, so ``propose``
    writes only what is new: the child sees what its ancestors' cells defined (``states``; a
    backend that forks sessions: seccomp or local).
    """
    if budget is None and time_budget is None:
        raise SpecError("explore needs budget=N (nodes), time_budget='30m', or both")
    if budget is not None and (not isinstance(budget, int) or budget < 1):
        raise SpecError(f"budget must be a whole number ≥ 1, got {budget!r}")
    if not isinstance(max_parallel, int) or max_parallel < 1:
        raise SpecError(f"max_parallel must be a whole number ≥ 1, got {max_parallel!r}")
    timer = Timer(time_budget)
    manager = manager or current_manager()
    tables = trace_tables(manager)
    model = tables.open(trace, metric, maximize)
    if progress:
        _follow(model, manager, viewer)
    scheduler = scheduler or MCTS()
    spec = RunSpec(backend=backend, limits=limits if isinstance(limits, Limits) else Limits.parse(**(limits or {})))
    in_flight: dict[Future, Node] = {}
    states = _node_states(manager, model, spec) if from_state else None

    def launch() -> bool:
        if timer.expired or (budget is not None and len(model) >= budget):
            return False
        with model.lock:
            selection = scheduler.next(model)
        if selection is None:
            return False
        parent = None if selection.parent is None else model.nodes[selection.parent]
        try:
            code, params = _proposal(propose(parent))
        except BaseException:
            scheduler.release(selection)
            raise
        with model.lock:
            node = tables.add(model, selection.parent, code, params=params, spec=spec.describe())
            scheduler.observe(node)
        child_spec = replace(spec, name=f"{trace}/{node.id}")
        run = manager.run if states is None else functools.partial(states.run, node)
        in_flight[pool.submit(run, code, child_spec, sink=_Silent())] = node
        return True

    with ThreadPoolExecutor(max_parallel, thread_name_prefix=f"explore-{trace}") as pool:
        try:
            while True:
                while len(in_flight) < max_parallel and launch():
                    pass
                if not in_flight:
                    break
                if progress:
                    _progress(model, budget, len(in_flight))
                done, _ = wait(in_flight, timeout=timer.remaining, return_when=FIRST_COMPLETED)
                if not done:
                    _cancel(manager, tables, trace, in_flight.values())
                    done, _ = wait(in_flight)
                for future in done:
                    _settle(tables, model, scheduler, in_flight.pop(future), future)
        except BaseException:
            _cancel(manager, tables, trace, in_flight.values())
            for future in list(in_flight):
                wait([future])
                with suppress(Exception):  # recorded in the node; the first error is the one raised
                    _settle(tables, model, scheduler, in_flight.pop(future), future)
            raise
        finally:
            if progress:
                _progress(model, budget, len(in_flight), end="\n")
            if states is not None:
                states.close()
    return model


def _node_states(manager: Manager, trace: Trace, spec: RunSpec) -> NodeStates:
    """The node states of ``trace``, held within the kernel's ``state_budget``."""
    budget = StateBudget(manager.config.state_budget)
    return NodeStates(manager, trace, spec, budget, lambda text: print(text, end="", file=sys.stderr))


def _settle(tables: TraceTables, trace: Trace, scheduler: Scheduler, node: Node, future: Future) -> None:
    error = future.exception()
    with trace.lock:
        record_outcome(tables, trace, node, None if error else future.result(), error)
        scheduler.observe(node)
    if error is not None and not isinstance(error, TaskError):
        raise error  # the backend or the spec is wrong: every further run would fail too


def _cancel(manager: Manager, tables: TraceTables, trace: str, nodes: Iterable[Node]) -> None:
    for run_id in tables.active_runs([f"{trace}/{n.id}" for n in nodes]):
        manager.cancel(run_id)
