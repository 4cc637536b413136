"""The trace model, its tables in the run store, the timer, and explore with a stand-in manager."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jupyter_exec.errors import RemoteError, SpecError
from jupyter_exec.manager import RunResult
from jupyter_exec.store.records import RunRecords
from jupyter_exec.trace import RoundRobin, Timer, Trace, TraceTables, explore
from jupyter_exec.trace.explore import resolve_parent
from jupyter_exec.trace.model import Node
from jupyter_exec.trace.view import render


def build(maximize: bool = True) -> Trace:
    """1 ─ 2 ─ 4 ; 1 ─ 3 (failed) ; 5 (second root). Scores: 1→1, 2→3, 4→2, 5→5 or as given."""
    trace = Trace("t", "score", maximize)
    for node_id, parent, status, score in [
        (1, None, "succeeded", 1.0),
        (2, 1, "succeeded", 3.0),
        (3, 1, "failed", None),
        (4, 2, "succeeded", 2.0),
        (5, None, "succeeded", 0.5),
    ]:
        trace.add(Node(node_id, parent, f"x = {node_id}", params={"x": node_id}))
        trace.finish(node_id, status, {} if score is None else {"score": score}, error=status != "succeeded" and "E")
    return trace


def test_structure_queries():
    trace = build()
    assert [n.id for n in trace.ancestors(4)] == [1, 2, 4]
    assert [n.id for n in trace.children(1)] == [2, 3]
    assert [n.id for n in trace.leaves()] == [3, 4, 5]
    assert [n.id for n in trace.walk()] == [1, 2, 4, 3, 5]
    assert trace.nodes[4].depth == 2 and trace.roots == [1, 5]


def test_sota_is_direction_aware_and_has_a_latest_accepted_mode():
    up, down = build(True), build(False)
    assert up.sota().id == 2 and down.sota().id == 5
    assert up.sota("latest").id == 5  # 5 beat everything above it (nothing) after 2 did
    assert [n.id for n in up.nodes.values() if n.accepted] == [1, 2, 5]
    assert [n.id for n in down.nodes.values() if n.accepted] == [1, 5]
    assert up.nodes[4].improvements == 2 and up.nodes[4].path_best == 3.0
    with pytest.raises(ValueError):
        up.sota("worst")


def test_failed_and_nan_never_sota():
    trace = Trace("t")
    trace.add(Node(1, None, "c"))
    trace.finish(1, "failed", {"score": 99.0})
    trace.add(Node(2, None, "c"))
    trace.finish(2, "succeeded", {"score": float("nan")})
    assert trace.sota() is None
    with pytest.raises(ValueError):
        trace.finish(2, "succeeded", {"score": 1.0})  # once only


def test_dataframe_export():
    frame = build().to_dataframe()
    assert list(frame.index) == [1, 2, 3, 4, 5]
    assert frame.loc[2, "sota"] and frame.loc[4, "metric.score"] == 2.0 and frame.loc[4, "param.x"] == 4
    assert frame.loc[3, "status"] == "failed" and frame["parent"].isna().sum() == 2


def test_render_marks_sota():
    text = render(build())
    assert text.splitlines()[0] == "trace 't': maximise score, 5 nodes, best #2 score=3"
    assert "├─ #2  succeeded  score=3  x=2  ★ SOTA" in text and "│  └─ #4" in text


def test_store_round_trip_shares_the_run_store_file(tmp_path):
    path = tmp_path / "runs.sqlite3"
    runs = RunRecords(path)
    store = TraceTables(path)
    trace = store.open("t", "loss", maximize=False)
    root = store.add(trace, None, "a", params={"lr": 0.1}, spec={"backend": "local"})
    store.finish(trace, root, "succeeded", {"loss": 2.0}, run_id=7)
    child = store.add(trace, root.id, "b")
    store.finish(trace, child, "succeeded", {"loss": 1.0})
    loaded = TraceTables(path).open("t")
    assert loaded.metric == "loss" and not loaded.maximize
    assert [(n.id, n.parent, n.status, n.metrics, n.params) for n in loaded.nodes.values()] == [
        (root.id, None, "succeeded", {"loss": 2.0}, {"lr": 0.1}),
        (child.id, root.id, "succeeded", {"loss": 1.0}, {}),
    ]
    assert loaded.sota().id == child.id and loaded.nodes[root.id].run_id == 7
    assert runs.runs() == []  # the runs table is untouched
    with pytest.raises(SpecError, match="minimised"):
        store.open("t", "loss", maximize=True)
    with pytest.raises(SpecError, match="no node 999"):
        store.add(trace, 999, "c")
    assert store.names() == ["t"]


def test_nodes_of_a_dead_kernel_are_closed_on_load(tmp_path):
    store = TraceTables(tmp_path / "runs.sqlite3")
    trace = store.open("t")
    node = store.add(trace, None, "a")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store._execute("UPDATE trace_nodes SET owner_pid=? WHERE id=?", (dead.pid, node.id))
    loaded = store.open("t")
    assert loaded.nodes[node.id].status == "failed" and "exited" in loaded.nodes[node.id].error


def test_timer():
    now = [100.0]
    timer = Timer("30m", clock=lambda: now[0])
    assert timer.budget == 1800 and not timer.expired and timer.remaining == 1800
    now[0] += 1800
    assert timer.expired and timer.remaining == 0
    assert Timer("2h").budget == 7200 and Timer(None).remaining is None and not Timer(None).expired
    for bad in ("soon", "", "-5m", "30 minutes", "2x", "0"):
        with pytest.raises(SpecError):
            Timer(bad)


class FakeManager:
    """Evaluates each child's code as an expression; counts how many run at once."""

    def __init__(self, path: Path, delay: float = 0.02) -> None:
        self.records = RunRecords(path)
        self.config = SimpleNamespace(widgets="off")
        self.delay, self.running, self.most = delay, 0, 0
        self.lock = threading.Lock()
        self.ids = iter(range(1, 10**6))

    def run(self, code, spec, *, namespace=None, sink=None) -> RunResult:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            run_id = next(self.ids)
        try:
            time.sleep(self.delay)
            try:
                value = eval(code, {})
            except Exception as error:
                raise RemoteError(type(error).__name__, str(error), "", run_id=run_id) from None
            return RunResult(run_id, "succeeded", value)
        finally:
            with self.lock:
                self.running -= 1

    def cancel(self, run_id: int) -> bool:
        return False


def climb(parent):
    """Propose x one step up from the parent's; 0 for a root. Score peaks at x = 3."""
    x = 0 if parent is None else parent.params["x"] + 1
    return f"{{'score': -({x} - 3) ** 2}}", {"x": x}


def test_explore_runs_in_parallel_to_the_budget_and_resumes(tmp_path, capsys):
    manager = FakeManager(tmp_path / "runs.sqlite3")
    trace = explore(
        climb, budget=6, max_parallel=2, scheduler=RoundRobin(max_trace_num=2), trace="hill", manager=manager
    )
    assert len(trace) == 6 and trace.finished_count == 6 and manager.most == 2
    assert trace.sota().metrics["score"] > trace.nodes[trace.roots[0]].metrics["score"]
    line = capsys.readouterr().out.rstrip().split("\r")[-1]
    assert line.startswith("explore 'hill': 6/6 done, 0 running · best score=")
    first = set(trace.nodes)
    resumed = explore(climb, budget=10, max_parallel=2, trace="hill", manager=manager, progress=False)
    assert resumed is trace  # the process's one live tree, grown further
    assert len(resumed) == 10 and first < set(resumed.nodes)
    assert resumed.sota().metrics["score"] == 0.0


def test_explore_keeps_a_stored_traces_metric(tmp_path):
    manager = FakeManager(tmp_path / "runs.sqlite3")
    explore(
        lambda parent: "{'loss': 1.0}",
        budget=1,
        trace="l",
        metric="loss",
        maximize=False,
        manager=manager,
        progress=False,
    )
    trace = explore(lambda parent: "{'loss': 0.5}", budget=2, trace="l", manager=manager, progress=False)
    assert (trace.metric, trace.maximize, trace.sota().metrics["loss"]) == ("loss", False, 0.5)


def test_explore_records_failures_and_missing_metrics(tmp_path):
    manager = FakeManager(tmp_path / "runs.sqlite3")
    proposals = iter(["1 / 0", "{'other': 1}", "7", "{'score': 9}"])
    trace = explore(
        lambda parent: next(proposals),
        budget=4,
        trace="f",
        manager=manager,
        progress=False,
        scheduler=RoundRobin(max_trace_num=4),
    )
    statuses = [(n.status, n.metrics.get("score")) for n in trace.nodes.values()]
    assert statuses == [("failed", None), ("failed", None), ("succeeded", 7.0), ("succeeded", 9.0)]
    assert "ZeroDivisionError" in trace.nodes[trace.roots[0]].error
    assert "has no number 'score'" in trace.nodes[trace.roots[1]].error


def test_explore_stops_at_the_time_budget(tmp_path):
    manager = FakeManager(tmp_path / "runs.sqlite3", delay=0.2)
    started = time.monotonic()
    trace = explore(climb, time_budget="0.5s", max_parallel=1, trace="t", manager=manager, progress=False)
    assert time.monotonic() - started < 1.5
    assert 2 <= len(trace) <= 4 and all(n.finished for n in trace.nodes.values())


def test_explore_propose_error_releases_and_nothing_is_left_running(tmp_path):
    manager = FakeManager(tmp_path / "runs.sqlite3")
    scheduler = RoundRobin()

    def propose(parent):
        if parent is not None:
            raise KeyError("no idea")
        return "{'score': 1}"

    with pytest.raises(KeyError):
        explore(propose, budget=5, trace="e", manager=manager, scheduler=scheduler, progress=False)
    assert scheduler.pending == frozenset()
    trace = TraceTables(tmp_path / "runs.sqlite3").open("e")
    assert len(trace) == 1 and trace.nodes[trace.roots[0]].status == "succeeded"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "budget=N"),
        ({"budget": 0}, "budget"),
        ({"budget": 2, "max_parallel": 0}, "max_parallel"),
        ({"time_budget": "later"}, "time_budget"),
    ],
)
def test_explore_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(SpecError, match=message):
        explore(climb, manager=FakeManager(tmp_path / "runs.sqlite3"), **kwargs)


def test_resolve_parent():
    trace = build()
    assert resolve_parent(trace, "root") is None and resolve_parent(trace, "best") == 2
    assert resolve_parent(trace, "latest") == 5 and resolve_parent(trace, "4") == 4
    with pytest.raises(SpecError):
        resolve_parent(trace, "77")
    with pytest.raises(SpecError):
        resolve_parent(trace, "first")


def test_public_names():
    import jupyter_exec
    import jupyter_exec.trace

    assert "explore" in jupyter_exec.__all__ and jupyter_exec.explore is explore
    assert set(jupyter_exec.trace.__all__) == {
        "MCTS",
        "Node",
        "Probabilistic",
        "Random",
        "RoundRobin",
        "SOTABased",
        "Scheduler",
        "Selection",
        "Timer",
        "Trace",
        "TraceLength",
        "TraceTables",
        "explore",
    }
