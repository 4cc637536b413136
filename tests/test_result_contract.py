"""What every sandbox backend owes a cell, through a real kernel: results, output, errors.

The same cells run on each backend; a backend that is missing fails in CI (JX_REQUIRE_ALL=1).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from conftest import require

from jupyter_exec.backends.factory import backend_class

pytestmark = pytest.mark.kernel


@pytest.fixture(params=[pytest.param("seccomp", marks=pytest.mark.ordinary_user), "container"])
def sandbox(request, kernel) -> str:
    """The magic line for one backend, once that backend is known to work here."""
    availability = backend_class(request.param).availability()
    require(availability.ok, f"{request.param} backend: {availability.reason} — {availability.fix}")
    return f"%%sandbox --backend {request.param}"


def _skip_without_own_shm(kernel, sandbox: str) -> None:
    """Where doctor says the seccomp backend has no /dev/shm of the run's own (no mount namespace:
    test_ordinary_user checks that the cell then meets exactly that), there is nothing to check."""
    if sandbox.endswith("seccomp") and kernel.offers("--shm: refused"):
        pytest.skip("doctor: no mount namespace here, so no /dev/shm of the run's own")


def test_last_value_out_and_display(kernel, sandbox):
    cell = kernel.run(
        f"{sandbox} --out total,frame\n"
        "import pandas as pd, numpy as np\n"
        "total = sum(range(10))\n"
        "frame = pd.DataFrame({'a': np.arange(3), 'b': ['x', 'y', 'z']})\n"
        "class Table:\n"
        "    def _repr_html_(self): return '<b>bold</b><script>alert(1)</script>'\n"
        "display(Table())\n"
        "print('printed')\n"
        "{'k': (1, 2.5), 'arr': np.ones((2, 2))}",
        check=True,
    )
    assert cell.stdout == "printed\n"
    assert "'k': (1, 2.5)" in cell.result_text and "array([[1., 1.]" in cell.result_text
    assert kernel.eval("total") == 45
    assert kernel.eval("frame.to_dict('list')") == {"a": [0, 1, 2], "b": ["x", "y", "z"]}
    html = cell.displays[0]["text/html"]
    assert "<b>bold</b>" in html and "script" not in html  # sanitised: no scripts from the sandbox
    run = kernel.last_run()
    assert (run["status"], run["backend"]) == ("succeeded", sandbox.split()[-1])


def test_exception_reraised_with_remote_traceback(kernel, sandbox):
    cell = kernel.run(f"{sandbox}\ndef inner():\n    return 1 / 0\ninner()")
    assert cell.error["ename"] == "ZeroDivisionError"
    traceback = "\n".join(cell.error["traceback"])
    assert "inner()" in traceback and "return 1 / 0" in traceback and "bootstrap" not in traceback
    assert kernel.last_run()["status"] == "failed"


def test_stdout_and_stderr_stream_live_and_decode_split_characters(kernel, sandbox):
    code = (
        "import sys, time\n"
        "for i in range(6):\n"
        "    print('tick', i, flush=True)\n"
        "    time.sleep(0.25)\n"
        "data = 'héllo wörld ✓ 🐍\\n'.encode()\n"
        "for i in range(len(data)):\n"
        "    sys.stdout.buffer.write(data[i:i + 1]); sys.stdout.buffer.flush(); time.sleep(0.002)\n"
        "print('to stderr', file=sys.stderr)"
    )
    cell = kernel.run(f"{sandbox}\n{code}", check=True)
    assert cell.stdout == "".join(f"tick {i}\n" for i in range(6)) + "héllo wörld ✓ 🐍\n"
    assert cell.stderr == "to stderr\n"
    assert cell.finished_at - cell.stream_times[0] > 1.0  # the first line came long before the end


def test_output_flood_is_capped_in_the_cell_and_logged_whole(kernel, sandbox):
    rss_before = _rss(kernel.pid)
    cell = kernel.run(
        f"{sandbox}\nimport sys\nline = 'x' * 999 + '\\n'\nfor _ in range(50_000):\n    sys.stdout.write(line)",
        timeout=300,
    )
    run = kernel.last_run()
    assert run["status"] == "succeeded"
    assert len(cell.stdout) < 1.1 * 2**20
    assert f"output truncated at 1,048,576 bytes; full log: %jx logs {run['id']}" in cell.stdout
    with open(run["log_path"], "rb") as log:  # all of it, then how the run ended
        log.seek(50_000_000 - 1000)
        end = log.read()
    assert end.startswith(b"x" * 999 + b"\n") and end[1000:].startswith(
        f"[jupyter-exec] run {run['id']} succeeded".encode()
    )
    assert _rss(kernel.pid) - rss_before < 100 * 2**20  # 50 MB went to disk, not into the kernel


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_multiprocessing_pool_maps_a_function_of_the_cell(kernel, sandbox):
    _skip_without_own_shm(kernel, sandbox)
    cell = kernel.run(
        f"{sandbox}\nimport multiprocessing\n"
        "def square(x):\n    return x * x\n"
        "with multiprocessing.Pool(2) as pool:\n    squares = pool.map(square, range(6))\n"
        "squares",
        check=True,
    )
    assert cell.result_text == "[0, 1, 4, 9, 16, 25]"


def test_shm_is_the_runs_own_sized_and_gone_afterwards(kernel, sandbox):
    _skip_without_own_shm(kernel, sandbox)
    name = f"/dev/shm/jx-test-{uuid.uuid4().hex}"
    size = "import os\nst = os.statvfs('/dev/shm')\n"
    cell = kernel.run(
        f"{sandbox}\n{size}open({name!r}, 'w').write('left behind')\nst.f_blocks * st.f_frsize", check=True
    )
    assert cell.result_text == str(64 * 2**20)  # ExecConfig.shm's default
    assert not os.path.exists(name)  # never the host's /dev/shm
    cell = kernel.run(f"{sandbox} --shm 16m\n{size}(st.f_blocks * st.f_frsize, os.path.exists({name!r}))", check=True)
    assert cell.result_text == f"({16 * 2**20}, False)"  # a new /dev/shm (not a pooled 64m one), empty


def test_shm_size_and_memory_limit_are_enforced(kernel, sandbox):
    _skip_without_own_shm(kernel, sandbox)
    fill = "f = open('/dev/shm/fill', 'wb')\nfor _ in range({mb}):\n    f.write(b'x' * 2**20)\nf.flush()"
    cell = kernel.run(f"{sandbox} --shm 8m\n{fill.format(mb=16)}")
    assert cell.error["ename"] == "OSError" and "[Errno 28] No space left on device" in cell.error["evalue"]
    if kernel.offers("--mem: RLIMIT_AS") and sandbox.endswith("seccomp"):
        return  # doctor: no cgroup, so --mem is address space, which a tmpfs's pages are not
    cell = kernel.run(f"{sandbox} --shm 512m --mem 128m\n{fill.format(mb=256)}")
    assert cell.error["ename"] == "ResourceLimitError"  # what /dev/shm holds is memory of the run
    assert kernel.last_run()["status"] == "oom"
