"""One trace grown by several writers at once: cells with ``--trace --bg`` and a
``map(..., trace=...)`` in the same kernel make one consistent tree, the same after a restart."""

from __future__ import annotations

import pytest
from conftest import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]

LIVE = "trace_tables(jupyter_exec.current_manager()).open('sweep')"  # the model every writer grew
STORED = "jupyter_exec.trace.TraceTables(jupyter_exec.current_manager().records.path).read('sweep')"


def _shape(trace: str) -> str:
    """An expression for the tree's shape: each node's id, parent, depth, status, accepted flag and
    score; the SOTA; how many nodes and how many finished."""
    return (
        f"(lambda t: (sorted((n.id, n.parent, n.depth, str(n.status), n.accepted, n.metrics.get('score'))"
        f" for n in t.nodes.values()), t.sota().id, len(t), t.finished_count))({trace})"
    )


def test_background_cells_and_a_map_grow_one_tree(tmp_path):
    data_dir = tmp_path / "data"
    kernel = Kernel(data_dir, tmp_path)
    try:
        kernel.run("%%sandbox --backend seccomp --trace sweep\n{'score': 1.0}", check=True)
        handles = []
        for score in (2, 5, 3, 4):
            cell = kernel.run(
                f"%%sandbox --backend seccomp --trace sweep --bg\nimport time\ntime.sleep(1)\n{{'score': {score}.0}}",
                check=True,
            )
            handles.append(int(cell.displays[0]["text/plain"].split()[1]))  # run N in the background: ...
        swept = kernel.run(
            "import jupyter_exec\nfrom jupyter_exec.trace.explore import trace_tables\n"
            "scores = jupyter_exec.map(\"import time\\ntime.sleep(0.05)\\n{'score': item / 2}\", range(20), "
            "backend='seccomp', trace='sweep', max_parallel=2, batch_size=3)",
            check=True,
            timeout=120,
        )
        assert "map: 20/20 done" in swept.stderr
        for run_id in handles:
            kernel.run(f"%jx wait {run_id}", check=True, timeout=60)
        live = kernel.eval(_shape(LIVE))
        assert kernel.eval(_shape(STORED)) == live  # the rows say what the model says
        rendered = kernel.run("%jx tree sweep", check=True).stdout
    finally:
        kernel.shutdown()

    nodes, best, count, finished = live
    assert count == finished == 25  # one front cell, four in the background, twenty items
    root = nodes[0]
    assert root[1] is None and root[5] == 1.0
    assert all(parent == root[0] and depth == 1 for _, parent, depth, *_ in nodes[1:])  # all under the latest
    assert all(status == "succeeded" for _, _, _, status, _, _ in nodes)
    assert sorted(score for *_, score in nodes) == sorted([1.0, 2.0, 5.0, 3.0, 4.0, *(i / 2 for i in range(20))])
    assert next(score for node_id, *_, score in nodes if node_id == best) == 9.5  # the best: item 19
    assert sum(accepted for *_, accepted, _ in nodes) >= 2  # the root, and at least one child that beat it

    restarted = Kernel(data_dir, tmp_path)
    try:
        restarted.run("import jupyter_exec\nfrom jupyter_exec.trace.explore import trace_tables", check=True)
        assert restarted.eval(_shape(LIVE)) == live
        assert restarted.run("%jx tree sweep", check=True).stdout == rendered
    finally:
        restarted.shutdown()
