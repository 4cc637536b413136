"""Every run's timeline, through a real kernel: the phases of a process, container and Ray run in
order, their first-to-last as long as the cell took on the test's own clock; ``%jx show`` and
``%jx stats`` (p50/p90/p99 per backend after 200 runs)."""

from __future__ import annotations

import importlib.util
import re
import time

import pytest
from conftest import require

from jupyter_exec.backends.container.backend import ContainerBackend
from jupyter_exec.timeline import PHASES, parse

pytestmark = [pytest.mark.kernel]

SLEEP = "import time\ntime.sleep(1.5)\nprint('done', flush=True)"
CELLS = {
    "seccomp": f"%%sandbox --backend seccomp\n{SLEEP}",
    "container": f"%%sandbox --backend container\n{SLEEP}",
    "ray": f"%%rayrun\n{SLEEP}",
}
EVERY_RUN = {"queued", "admitted", "recorded", "sandbox_ready", "started", "first_output", "ended", "decoded"}


def _available(backend: str) -> None:
    if backend == "container":
        availability = ContainerBackend.availability()
        require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    if backend == "ray":
        require(importlib.util.find_spec("ray") is not None, "ray not installed (pip install -e .[ray])")


@pytest.mark.parametrize("backend", list(CELLS))
def test_a_runs_timeline_is_in_order_and_accounts_for_the_cells_time(kernel, backend):
    _available(backend)
    kernel.run(CELLS[backend], timeout=300, check=True)  # a first run may start Ray or a pool: timed below
    tries = []
    for _ in range(3):  # a phase the timeline misses is missed every time; a stall of a busy machine is not
        started = time.monotonic()
        kernel.run(CELLS[backend], timeout=300, check=True)
        wall = time.monotonic() - started
        run = kernel.records().get(kernel.last_run()["id"])
        assert run is not None and run["backend"] == backend
        marks, notes = parse(run["timeline"])
        names = [name for name, _ in marks]
        assert set(names) >= EVERY_RUN, names
        known = [name for name in names if name in PHASES]
        assert known == sorted(known, key=PHASES.index), names  # each phase after the one before it
        first_to_last = marks[-1][1] - marks[0][1]
        tries.append((first_to_last, wall, marks))
        if abs(first_to_last - wall) <= 0.05 * wall:
            break
    else:
        raise AssertionError(f"the timeline's first-to-last against the cell's wall time, three times: {tries}")
    if backend != "ray":
        assert notes.get("sandbox_ready") in ("pool", "made")
    shown = kernel.run(f"%jx show {run['id']}", check=True).stdout
    assert re.search(r"^timeline [\d.]+ s: admit [\d.]+ ms · record ", shown, re.M), shown


def test_the_first_rayrun_accounts_for_rays_start(tmp_path, notebook_dir):
    """A fresh kernel's first ``%%rayrun``: Ray's start and its first worker's each a phase; its
    lines about Ray are information (stdout), not errors."""
    require(importlib.util.find_spec("ray") is not None, "ray not installed (pip install -e .[ray])")
    from conftest import Kernel

    kernel = Kernel(tmp_path / "data", notebook_dir)
    try:
        started = time.monotonic()
        cell = kernel.run("%%rayrun\nprint('hello')", timeout=300, check=True)
        wall = time.monotonic() - started
        assert "[jupyter-exec] starting a local Ray" in cell.stdout and "[jupyter-exec]" not in cell.stderr
        marks, _ = parse(kernel.records().get(kernel.last_run()["id"])["timeline"])
        spans = dict((name, at - marks[i][1]) for i, (name, at) in enumerate(marks[1:]))
        assert spans["ray_started"] > 1 and "in_worker" in spans, spans  # ray.init, then a worker for the task
        assert abs((marks[-1][1] - marks[0][1]) - wall) <= 0.05 * wall
    finally:
        kernel.shutdown_leaving_nothing()


def test_stats_give_percentiles_per_backend_after_200_runs(kernel):
    cell = "for _ in range(200):\n    get_ipython().run_cell_magic('sandbox', '--backend seccomp --quiet', 'pass')"
    kernel.run(cell, timeout=600, check=True)
    table = kernel.run("%jx stats 200", check=True).stdout.splitlines()
    assert table[0] == "the newest 200 runs with a timeline"
    assert table[1].split() == ["backend", "runs", "phase", "p50", "ms", "p90", "ms", "p99", "ms"]
    rows = {row.split()[2]: [float(v) for v in row.split()[3:]] for row in table[2:]}
    assert all(row.split()[:2] == ["seccomp", "200"] for row in table[2:])
    assert {"admitted", "recorded", "sandbox_ready", "started", "ended", "decoded", "total"} <= set(rows)
    for phase, (p50, p90, p99) in rows.items():
        assert 0 <= p50 <= p90 <= p99, (phase, p50, p90, p99)
    assert rows["total"][0] > rows["sandbox_ready"][0]
