"""``explore`` through a real kernel on the seccomp backend: it improves, and survives a SIGKILL."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time

import pytest
from conftest import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]

SETUP = '''
import jupyter_exec
from jupyter_exec.trace import RoundRobin

def propose(parent):
    """Hill-climb x from 0; the score peaks at x = 4."""
    x = 0 if parent is None else parent.params["x"] + 1
    return f"import time\\ntime.sleep(0.4)\\n{{'score': -({x} - 4) ** 2}}", {"x": x}
'''
EXPLORE = (
    "trace = jupyter_exec.explore(propose, budget=12, max_parallel=2, backend='seccomp', "
    "scheduler=RoundRobin(max_trace_num=2), trace='hill', limits={'timeout': '60s'})"
)


def _nodes(data_dir, trace: str = "hill") -> list[dict]:
    """The stored nodes of ``trace`` (none before the kernel has made the tables)."""
    with sqlite3.connect(data_dir / "runs.sqlite3") as db:
        db.row_factory = sqlite3.Row
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name='trace_nodes'").fetchone():
            return []
        return [dict(r) for r in db.execute("SELECT * FROM trace_nodes WHERE trace=? ORDER BY id", (trace,))]


def test_explore_improves_then_resumes_after_the_kernel_is_killed(tmp_path):
    data_dir = tmp_path / "data"
    first = Kernel(data_dir, tmp_path)
    try:
        first.run(SETUP, check=True)
        first.client.execute(EXPLORE)
        deadline = time.monotonic() + 120
        while sum(n["status"] == "succeeded" for n in _nodes(data_dir)) < 5:
            assert time.monotonic() < deadline, _nodes(data_dir)
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.client.stop_channels()
        first.km.shutdown_kernel(now=True)
    before = _nodes(data_dir)
    assert 5 <= len(before) < 12

    second = Kernel(data_dir, tmp_path)
    try:
        second.run(SETUP, check=True)
        cell = second.run(EXPLORE, check=True, timeout=240)
        assert "explore 'hill': 12/12 done, 0 running · best score=0 " in cell.stdout
        assert second.eval("(len(trace), trace.finished_count)") == (12, 12)
        assert second.eval("trace.nodes[trace.roots[0]].metrics['score']") == -16.0
        assert second.eval("(trace.sota().metrics['score'], trace.sota().params['x'])") == (0.0, 4)
        assert second.eval("[n.id for n in trace.ancestors(trace.sota().id)][0] in trace.roots")
        tree = second.run("%jx tree hill", check=True).stdout
        assert tree.startswith("trace 'hill': maximise score, 12 nodes") and "★ SOTA" in tree
    finally:
        second.shutdown()

    after = {n["id"]: n for n in _nodes(data_dir)}
    assert {n["id"] for n in before} < set(after)  # resumed: nothing stored was lost or redone
    orphans = [n for n in before if n["status"] == "running"]  # in flight when the kernel died
    assert orphans and all(
        after[n["id"]]["status"] == "failed" and "exited" in after[n["id"]]["error"] for n in orphans
    )
    resumed = [n for n in after.values() if n["id"] > max(b["id"] for b in before)]
    assert resumed and all(n["parent"] in after for n in resumed if n["parent"] is not None)

    with sqlite3.connect(data_dir / "runs.sqlite3") as db:
        runs = db.execute(
            "SELECT started, ended, isolation FROM runs WHERE name LIKE 'hill/%' "
            "AND status='succeeded' ORDER BY started"
        ).fetchall()
    assert {isolation for _, _, isolation in runs} == {"seccomp"}
    overlapping = sum(1 for (s1, e1, _), (s2, _, _) in itertools.pairwise(runs) if s2 < e1)
    assert overlapping >= 3  # two at a time, not one after the other


def test_sandbox_cells_as_trace_nodes(kernel):
    magic = "%%sandbox --backend seccomp --trace cells"
    kernel.run(f"{magic} --metric loss --minimize\n{{'loss': 3.0}}", check=True)
    kernel.run(f"{magic} --parent best\n{{'loss': 2.0}}", check=True)
    kernel.run(f"{magic}\n{{'loss': 2.5}}", check=True)  # extends the latest accepted
    failed = kernel.run(f"{magic} --parent root\n1 / 0")
    assert failed.error["ename"] == "ZeroDivisionError"
    tree = kernel.run("%jx tree cells", check=True).stdout.splitlines()
    assert tree[0].startswith("trace 'cells': minimise loss, 4 nodes, best #") and tree[0].endswith(" loss=2")
    assert "succeeded  loss=3" in tree[1] and "└─ " in tree[2] and "★ SOTA" in tree[2]
    assert "   └─ " in tree[3] and "loss=2.5" in tree[3]
    assert "failed" in tree[4] and "ZeroDivisionError" in tree[4]
    frame = kernel.run(
        "from jupyter_exec.trace.explore import trace_tables\n"
        "from jupyter_exec import current_manager\nm = current_manager()\n"
        "df = trace_tables(m).open('cells').to_dataframe()\n"
        "print(list(df['status']), df['run_id'].notna().all())",
        check=True,
    )
    assert frame.stdout == "['succeeded', 'succeeded', 'succeeded', 'failed'] True\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--trace cells --parent 99999", "trace 'cells' has no node 99999"),
        ("--trace cells --parent first", "--parent: 'first' is not a node id"),
        ("--trace cells --maximize", "trace 'cells' records loss (minimised)"),
        ("--parent best", "need --trace NAME"),
        ("--trace cells --bg --parent 99999", "trace 'cells' has no node 99999"),  # in the background too
    ],
)
def test_bad_trace_options_are_one_line_errors(kernel, line, message):
    assert message in kernel.refused(f"%%sandbox --backend seccomp {line}\nprint('ran')")


def test_interrupt_cancels_the_runs_of_explore(kernel):
    kernel.run(SETUP.replace("time.sleep(0.4)", "time.sleep(60)"), check=True)
    msg_id = kernel.client.execute(EXPLORE.replace("'hill'", "'stuck'"))
    deadline = time.monotonic() + 30
    while len(_nodes(kernel.data_dir, "stuck")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    started = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.client.get_shell_msg(timeout=30)
    while reply["parent_header"]["msg_id"] != msg_id:
        reply = kernel.client.get_shell_msg(timeout=30)
    assert reply["content"]["ename"] == "KeyboardInterrupt" and time.monotonic() - started < 15
    with sqlite3.connect(kernel.data_dir / "runs.sqlite3") as db:
        nodes = db.execute("SELECT status FROM trace_nodes WHERE trace='stuck'").fetchall()
        runs = db.execute("SELECT status FROM runs WHERE name LIKE 'stuck/%'").fetchall()
    assert nodes == [("cancelled",), ("cancelled",)] and runs == [("cancelled",), ("cancelled",)]
