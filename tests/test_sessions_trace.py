"""Experiment trees from live states, through a real kernel: ``explore(..., from_state=True)``
and ``%%sandbox --trace T --parent N --from-state``; each node's code runs once, a released
state is rebuilt by running its ancestors' cells once more, root first."""

from __future__ import annotations

import collections
import uuid

import pytest

from jupyter_exec.trace.tables import TraceTables

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]

PROPOSE = """
from jupyter_exec import explore
from jupyter_exec.trace.schedulers import RoundRobin

def propose(parent):
    depth = 0 if parent is None else parent.params["depth"] + 1
    # each node defines its own variable and sums those of its ancestors: -100 for one it cannot see
    code = f"v{depth} = {depth}\\nsum(globals().get(f'v{{i}}', -100) for i in range({depth} + 1))"
    return code, {"depth": depth}
"""


def code_runs(kernel) -> collections.Counter:
    """How many times each code ran, from the store (the run of each cell records its code)."""
    records = kernel.records()
    return collections.Counter(records.get(run["id"])["code"] for run in records.runs(limit=500))


def test_explore_from_state_runs_each_node_once_and_rebuilds_a_released_state(kernel):
    trace = f"states-{uuid.uuid4().hex[:6]}"
    before = code_runs(kernel)
    kernel.run(PROPOSE, check=True)
    grow = "t = explore(propose, budget={}, backend='seccomp', scheduler=RoundRobin(), from_state=True, trace={!r})"
    kernel.run(grow.format(5, trace), check=True)
    scores = kernel.eval("[(n.depth, n.metrics.get('score')) for n in t.walk()]")
    assert scores == [(d, float(sum(range(d + 1)))) for d in range(5)]  # depth 4: each saw all its ancestors
    ran = code_runs(kernel) - before
    assert len(ran) == 5 and set(ran.values()) == {1}, ran
    assert "-n" not in kernel.run("%jx sessions", check=True).result_text  # its states released at the end

    grown = kernel.run(grow.format(6, trace), check=True)
    assert "its state was released; rebuilding it: the cells of nodes" in grown.stderr, grown.stderr
    ran = code_runs(kernel) - before
    assert sorted(ran.values()) == [1, 2, 2, 2, 2, 2], ran  # each ancestor once more, the new node once
    assert kernel.eval("t.nodes[max(t.nodes)].metrics['score']") == float(sum(range(6)))


def test_a_trace_cell_from_its_parents_state(kernel):
    """A --trace cell with --session keeps its session as its node's state; children of that node
    with --from-state each start from it (a fork), and the session itself is untouched."""
    trace, name, root = f"cells-{uuid.uuid4().hex[:6]}", f"root-{uuid.uuid4().hex[:6]}", 0
    line = f"%%sandbox --backend seccomp --trace {trace}"
    try:
        kernel.run(f"{line} --session {name} --parent root\ndata = list(range(10))\n{{'score': 1}}", check=True)
        root = max(TraceTables(kernel.data_dir / "runs.sqlite3").open(trace).nodes)
        for _ in range(2):
            kernel.run(f"{line} --parent {root} --from-state\ndata.append(10)\n{{'score': len(data)}}", check=True)
        nodes = TraceTables(kernel.data_dir / "runs.sqlite3").open(trace).nodes
        assert [(n.parent, n.metrics["score"]) for n in nodes.values() if n.id != root] == [(root, 11.0)] * 2
        left = kernel.run(f"%%sandbox --backend seccomp --session {name}\nprint(len(data))", check=True)
        assert left.stdout == "10\n"
    finally:
        for session in [name, *(f"{trace}-n{node}" for node in range(root + 1, root + 3))]:
            kernel.run(f"%jx end {session}")
        kernel.assert_no_run_processes()
