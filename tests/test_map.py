"""``jupyter_exec.map`` on the backends that do not fan out by themselves, through a real
kernel: every result in order, each failed item's error beside the others' results, an
interrupt that leaves nothing running, and the record in the store. (Ray's map: test_ray_kernel.py.)"""

from __future__ import annotations

import json
import time

import pytest
from conftest import require

from jupyter_exec.backends.container import ContainerBackend

pytestmark = pytest.mark.kernel

_SWEEP = (
    "import jupyter_exec\n"
    "def score(x):\n    return 1 // (x - 7) if x == 7 else x * x\n"
    "good = jupyter_exec.map({work!r}, range(1000), backend={backend!r}, max_parallel=2)\n"
    "try:\n    jupyter_exec.map({failing}, range(1000), backend={backend!r}, max_parallel=2, progress=False)\n"
    "except jupyter_exec.MapError as error:\n    failure = error\n"
    "(good == [2 * x for x in range(1000)], failure.results[:7], "
    "failure.results[8:] == [x * x for x in range(8, 1000)], sorted(failure.errors), "
    "type(failure.errors[7]).__name__)"
)
_EXPECTED = "(True, [0, 1, 4, 9, 16, 25, 36], True, [7], 'ZeroDivisionError')"


def _map_rows(kernel, count: int) -> list[dict]:
    """The newest ``count`` map runs (not their batches), newest first, details parsed."""
    rows = [r for r in kernel.records().runs(200, columns=("id", "name", "status", "details")) if r["name"] == "map"]
    return [{**r, "details": json.loads(r["details"] or "{}")} for r in rows[:count]]


@pytest.mark.ordinary_user
def test_a_thousand_items_on_seccomp(kernel):
    """All results in order; one item raising leaves the other 999 results and its error."""
    cell = kernel.run(_SWEEP.format(work="item * 2", backend="seccomp", failing="score"), timeout=180)
    assert cell.error is None, cell.error
    assert cell.result_text == _EXPECTED
    assert "[jupyter-exec] map: 1000/1000 done\n" in cell.stderr
    failed, good = _map_rows(kernel, 2)
    assert good["status"] == "succeeded"
    assert good["details"] == {"items": 1000, "cached": 0, "succeeded": 1000, "failed": 0}
    assert failed["status"] == "failed"
    assert failed["details"] == {"items": 1000, "cached": 0, "succeeded": 999, "failed": 1}
    batches = [r for r in kernel.records().runs(40) if (r["name"] or "").startswith(f"map {failed['id']}[")]
    assert len(batches) == 8 and all(r["status"] == "succeeded" for r in batches)  # four batches per slot


@pytest.mark.ordinary_user
def test_the_progress_line_counts_failures(kernel):
    cell = kernel.run(
        "import jupyter_exec\n"
        "type(jupyter_exec.map('1 // (item % 20 - 7)', range(40), backend='seccomp', return_exceptions=True)[7])"
    )
    assert cell.result_text == "jupyter_exec.remote.ZeroDivisionError", cell
    assert cell.stderr.endswith("\r[jupyter-exec] map: 40/40 done, 2 failed\n"), cell.stderr


def test_an_item_error_is_also_its_nearest_builtin_base(kernel):
    """A function's ``socket.gaierror`` comes back an ``OSError`` with its errno, as it would locally."""
    cell = kernel.run(
        "import jupyter_exec, socket\n"
        "def lookup(host):\n    raise socket.gaierror(-2, f'{host}: Name or service not known')\n"
        "error = jupyter_exec.map(lookup, ['a'], backend='seccomp', return_exceptions=True, progress=False)[0]\n"
        "isinstance(error, OSError), error.errno, str(error)"
    )
    assert cell.result_text == "(True, -2, 'gaierror: [Errno -2] a: Name or service not known')", cell


@pytest.mark.ordinary_user
def test_interrupting_a_map_leaves_nothing_running(kernel):
    reply = kernel.interrupt_run(
        "import jupyter_exec\n"
        "jupyter_exec.map('import time\\ntime.sleep(60)', range(8), backend='seccomp', max_parallel=2, batch_size=1)"
    )
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    (row,) = _map_rows(kernel, 1)
    assert row["status"] == "cancelled"
    batches = [r for r in kernel.records().runs(20) if (r["name"] or "").startswith(f"map {row['id']}[")]
    assert 1 <= len(batches) <= 3 and all(r["status"] == "cancelled" for r in batches)  # nothing more started
    kernel.assert_no_run_processes()


@pytest.mark.ordinary_user
def test_a_map_refused_up_front_runs_nothing(kernel):
    before = kernel.records().runs(1)
    cell = kernel.run("import jupyter_exec\njupyter_exec.map(abs, [1], backend='seccomp', num_gpus=1)")
    assert cell.error["ename"] == "SpecError" and "backend='ray'" in cell.error["evalue"]
    assert kernel.records().runs(1) == before


@pytest.fixture
def docker_kernel(kernel):
    availability = ContainerBackend.availability()
    require(availability.ok, f"Docker backend: {availability.reason} — {availability.fix}")
    return kernel


def test_a_thousand_items_in_containers(docker_kernel):
    cell = docker_kernel.run(
        _SWEEP.format(work="item * 2", backend="container", failing="'1 // (item - 7) if item == 7 else item * item'"),
        timeout=300,
    )
    assert cell.error is None, cell.error
    assert cell.result_text == _EXPECTED


def test_functions_and_code_map_in_containers(docker_kernel):
    """An importable function, cell code and a notebook's lambda: the kernel's cloudpickle travels
    with the bootstrap, so the base image needs none of its own."""
    cell = docker_kernel.run(
        "import jupyter_exec, math\n"
        "print(jupyter_exec.map(math.sqrt, [4, 9], backend='container'), "
        "jupyter_exec.map('item ** 2', [4], backend='container'), "
        "jupyter_exec.map(lambda x: -x, [1, 2], backend='container', progress=False))"
    )
    assert cell.error is None, cell.error
    assert cell.stdout == "[2.0, 3.0] [16] [-1, -2]\n"


def test_interrupting_a_container_map_leaves_no_container(docker_kernel):
    import docker

    client = docker.from_env(version="auto")
    reply = docker_kernel.interrupt_run(
        "import jupyter_exec\n"
        "jupyter_exec.map('import time\\ntime.sleep(60)', range(6), backend='container', max_parallel=2, batch_size=1)"
    )
    assert reply["ename"] == "KeyboardInterrupt"
    (row,) = _map_rows(docker_kernel, 1)
    assert row["status"] == "cancelled"
    deadline = time.monotonic() + 15
    while True:
        left = [
            c["Names"]
            for c in client.api.containers(all=True, filters={"label": "jupyter-exec.run"})
            if c["Labels"].get("jupyter-exec.run") != "pool"
            and c["Labels"].get("jupyter-exec.owner-pid") == str(docker_kernel.pid)
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"containers of the interrupted map remain: {left}"
