"""Sandbox sessions (``%%sandbox --session NAME``) through a real kernel, on the process backends:
state across cells, the session's limits, interrupt, idle end, the kernel's death, walls."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Kernel, owned_processes

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]


@pytest.fixture
def name(kernel) -> Iterator[str]:
    """A fresh session name, its session ended after the test."""
    session = f"s-{uuid.uuid4().hex[:8]}"
    yield session
    kernel.run(f"%jx end {session}")


def cell(name: str, code: str, options: str = "", backend: str = "seccomp") -> str:
    return f"%%sandbox --backend {backend} --session {name} {options}\n{code}"


def session_processes(kernel_pid: int, scratch: str) -> list[int]:
    """The kernel's run processes working in ``scratch`` (a session's directory)."""
    found = []
    for pid in owned_processes(kernel_pid):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == scratch:
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("backend", ["seccomp", "local"])
def test_a_value_set_in_cell_one_is_there_in_cell_three(kernel, name, backend):
    kernel.run(cell(name, "import json\ncount = 1\nopen('notes.txt', 'w').write('kept')", backend=backend), check=True)
    kernel.run(cell(name, "count += 1", backend=backend), check=True)
    third = kernel.run(cell(name, "print(count, json.dumps([open('notes.txt').read()]))", "--out count", backend))
    assert third.error is None, third.error
    assert third.stdout == '2 ["kept"]\n'
    assert kernel.eval("count") == 2
    runs = [kernel.records().get(run["id"]) for run in kernel.records().runs(3)]
    assert [json.loads(r["details"])["cell"] for r in runs] == [3, 2, 1]
    assert {json.loads(r["spec"])["session"] for r in runs} == {name}
    listed = kernel.run("%jx sessions", check=True)
    assert name in listed.result_text


def test_a_later_cell_asking_for_other_session_limits_is_refused(kernel, name):
    kernel.run(cell(name, "x = 1", "--mem 300m"), check=True)
    refusal = kernel.refused(cell(name, "print('ran')", "--mem 400m"))
    assert refusal.startswith(f"--mem: session {name} runs with --mem 300m") and f"%jx end {name}" in refusal
    later = kernel.run(cell(name, "print(x)", "--timeout 20"), check=True)  # a cell's own limit: its own
    assert later.stdout == "1\n"


def test_the_memory_limit_covers_the_session(kernel, name):
    """Each cell's allocation fits the limit; together they do not."""
    kernel.run(cell(name, "a = bytearray(120 * 1024**2)\na[::4096] = b'x' * len(a[::4096])", "--mem 200m"), check=True)
    second = kernel.run(cell(name, "b = bytearray(120 * 1024**2)\nb[::4096] = b'x' * len(b[::4096])"))
    assert second.error is not None and second.error["ename"] == "ResourceLimitError", second.error
    assert kernel.last_run()["status"] == "oom"


def test_interrupt_stops_the_cell_and_keeps_the_session(kernel, name):
    kernel.run(cell(name, "kept = 'still here'"), check=True)
    reply = kernel.interrupt_run(cell(name, "import time\ntime.sleep(60)"))
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.last_run()["status"] == "cancelled"
    assert kernel.run(cell(name, "print(kept)"), check=True).stdout == "still here\n"


def test_a_cell_timeout_stops_the_cell_and_keeps_the_session(kernel, name):
    kernel.run(cell(name, "kept = 5"), check=True)
    kernel.fails_as(cell(name, "import time\ntime.sleep(60)", "--timeout 1"), "TaskTimeoutError", "timeout")
    assert kernel.run(cell(name, "print(kept)"), check=True).stdout == "5\n"


def test_end_frees_the_session_and_an_unknown_name_is_one_line(kernel, name):
    kernel.run(cell(name, "import os\nprint(os.getcwd())"), check=True)
    scratch = kernel.last_log().strip()
    assert session_processes(kernel.pid, scratch)
    assert kernel.run(f"%jx end {name}", check=True).stdout == f"session {name} ended\n"
    assert not Path(scratch).exists() and not session_processes(kernel.pid, scratch)
    unknown = kernel.run(f"%jx end {name}")
    assert unknown.stderr.startswith(f"UsageError: no session {name!r}") and unknown.stderr.count("\n") == 1
    fresh = kernel.run(cell(name, "print('kept' in globals())"), check=True)  # a new session: a fresh state
    assert fresh.stdout == "False\n"


def test_a_session_cannot_reach_another_sessions_files_or_processes(kernel, name):
    other = f"{name}-other"
    try:
        kernel.run(cell(other, "import os\nsecret = 'mine'\nopen('secret.txt', 'w').write('s')\nprint(os.getcwd())"))
        scratch = kernel.last_log().strip()
        (victim,) = session_processes(kernel.pid, scratch)
        attack = kernel.run(
            cell(
                name,
                f"import os, signal\nfor act in (lambda: open({scratch + '/secret.txt'!r}).read(), "
                f"lambda: os.kill({victim}, signal.SIGKILL)):\n"
                "    try:\n        act()\n        print('reached')\n"
                "    except OSError as error:\n        print(type(error).__name__)",
            )
        )
        assert attack.error is None and "reached" not in attack.stdout, attack.stdout
        assert kernel.run(cell(other, "print(secret)"), check=True).stdout == "mine\n"
    finally:
        kernel.run(f"%jx end {other}")


def test_a_backend_without_sessions_refuses_one_in_one_line(kernel):
    refusal = kernel.refused("%%rayrun --session x\nprint('ran')")
    assert "unrecognized arguments: --session" in refusal or "keeps no sessions" in refusal


def test_an_idle_session_ends(data_dir, notebook_dir):
    kernel = Kernel(data_dir, notebook_dir, env={"JX_SESSION_IDLE": "2s"})
    try:
        kernel.run(cell("idle", "import os\nprint(os.getcwd())"), check=True)
        scratch = kernel.last_log().strip()
        deadline = time.monotonic() + 15
        while session_processes(kernel.pid, scratch) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session_processes(kernel.pid, scratch) and not Path(scratch).exists()
        assert kernel.run("%jx sessions", check=True).result_text.count("idle") <= 1  # the header only
        assert kernel.run(cell("idle", "print('x' in globals())"), check=True).stdout == "False\n"
    finally:
        kernel.shutdown_leaving_nothing()


def test_a_killed_kernel_ends_every_session_within_ten_seconds(data_dir, notebook_dir):
    kernel = Kernel(data_dir, notebook_dir)
    for session in ("one", "two"):
        kernel.run(cell(session, "x = 1", backend="seccomp"), check=True)
    kernel.run(cell("three", "x = 1", backend="local"), check=True)
    pid = kernel.pid
    assert len(owned_processes(pid)) >= 3
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while owned_processes(pid) and time.monotonic() - killed < 10:
        time.sleep(0.1)
    assert not owned_processes(pid), f"left after 10 s: {owned_processes(pid)}"
    kernel.client.stop_channels()
