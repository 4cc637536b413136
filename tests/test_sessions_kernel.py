"""Sandbox sessions (``%%sandbox --session NAME``) through a real kernel, on the process backends
and the container backend (as root: rootful Docker; as ``jx-user``: rootless Podman): state
across cells, the session's limits, interrupt, idle end, the kernel's death, walls; and faults:
a session killed from outside (its process or container), out of memory, its container removed
as an engine's restart does it — each one line in the session's next cell, nothing left."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NO_NAMESPACES, Kernel, owned_processes, require
from containers import containers, kill_from_outside

from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.container.engine import Engine
from jupyter_exec.backends.process.cgroups import cgroup_mode
from jupyter_exec.backends.process.sessions import fork_cgroup

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
BACKENDS = ["seccomp", "container"]
ENGINE_URL = "__import__('jupyter_exec').current_manager().backend('container').engine.url"


def usable(backend: str) -> str:
    """``backend``, once it can run here (the container backend: where an engine runs)."""
    if backend == "container":
        if NO_NAMESPACES:  # scripts/test-as-user's second pass, as test_container_lockdown.py skips it
            pytest.skip("no namespaces: no rootless engine can start here; the first pass tests it")
        availability = ContainerBackend.availability()
        require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend that holds sessions and confines them."""
    return usable(request.param)


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


@pytest.mark.parametrize("which", ["local", *BACKENDS])
def test_a_value_set_in_cell_one_is_there_in_cell_three(kernel, name, which):
    backend = usable(which)
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


def test_a_later_cell_asking_for_other_session_limits_is_refused(kernel, name, backend):
    kernel.run(cell(name, "x = 1", "--mem 300m", backend), check=True)
    refusal = kernel.refused(cell(name, "print('ran')", "--mem 400m", backend))
    assert refusal.startswith(f"--mem: session {name} runs with --mem 300m") and f"%jx end {name}" in refusal
    later = kernel.run(cell(name, "print(x)", "--timeout 20", backend), check=True)  # a cell's own limit
    assert later.stdout == "1\n"


def test_the_memory_limit_covers_the_session(kernel, name, backend):
    """Each cell's allocation fits the limit; together they do not."""
    fill = "{0} = bytearray(120 * 1024**2)\n{0}[::4096] = b'x' * len({0}[::4096])"
    kernel.run(cell(name, fill.format("a"), "--mem 200m", backend), check=True)
    second = kernel.run(cell(name, fill.format("b"), backend=backend))
    assert second.error is not None and second.error["ename"] == "ResourceLimitError", second.error
    assert kernel.last_run()["status"] == "oom"


def test_interrupt_stops_the_cell_and_keeps_the_session(kernel, name, backend):
    kernel.run(cell(name, "kept = 'still here'", backend=backend), check=True)
    reply = kernel.interrupt_run(cell(name, "import time\ntime.sleep(60)", backend=backend))
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.last_run()["status"] == "cancelled"
    assert kernel.run(cell(name, "print(kept)", backend=backend), check=True).stdout == "still here\n"


def test_a_cell_timeout_stops_the_cell_and_keeps_the_session(kernel, name, backend):
    kernel.run(cell(name, "kept = 5", backend=backend), check=True)
    stuck = cell(name, "import time\ntime.sleep(60)", "--timeout 1", backend)
    kernel.fails_as(stuck, "TaskTimeoutError", "timeout")
    assert kernel.run(cell(name, "print(kept)", backend=backend), check=True).stdout == "5\n"


def test_a_cell_that_ignores_interrupts_ends_its_session(kernel, name, backend):
    kernel.run(cell(name, "kept = 5", backend=backend), check=True)
    stubborn = "import time\nwhile True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
    kernel.fails_as(cell(name, stubborn, "--timeout 1", backend), "TaskTimeoutError", "timeout")
    details = json.loads(kernel.records().get(kernel.last_run()["id"])["details"])
    assert details["session_ended"] == "its cell did not stop on an interrupt"
    fresh = kernel.run(cell(name, "print('kept' in globals())", backend=backend), check=True)
    assert fresh.stdout == "False\n"
    assert f"session {name} starts afresh: the last one ended (its cell did not stop on an interrupt)" in fresh.stderr


def test_end_frees_the_session_and_an_unknown_name_is_one_line(kernel, name, backend):
    printed = kernel.run(cell(name, "import os\nkept = 1\nprint(os.getcwd())", backend=backend), check=True)
    if backend == "container":
        engine = Engine(kernel.eval(ENGINE_URL)).client
        held = lambda: containers(engine, run=f"session-{name}")  # noqa: E731
    else:
        scratch = printed.stdout.strip()
        held = lambda: session_processes(kernel.pid, scratch) or Path(scratch).exists()  # noqa: E731
    assert held()
    assert kernel.run(f"%jx end {name}", check=True).stdout == f"session {name} ended\n"
    deadline = time.monotonic() + 10
    while held() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not held()
    unknown = kernel.run(f"%jx end {name}")
    assert unknown.stderr.startswith(f"UsageError: no session {name!r}") and unknown.stderr.count("\n") == 1
    fresh = kernel.run(cell(name, "print('kept' in globals())", backend=backend), check=True)  # a fresh state
    assert fresh.stdout == "False\n"


def test_a_session_cannot_reach_another_sessions_files_or_processes(kernel, name):
    other = f"{name}-other"
    try:
        printed = kernel.run(
            cell(other, "import os\nsecret = 'mine'\nopen('secret.txt', 'w').write('s')\nprint(os.getcwd())")
        )
        scratch = printed.stdout.strip()
        (victim,) = session_processes(kernel.pid, scratch)
        attack = kernel.run(
            cell(
                name,
                f"import os, signal\nfor act in (lambda: open({scratch + '/secret.txt'!r}).read(), "
                f"lambda: os.kill({victim}, signal.SIGKILL), lambda: os.open('/proc/{victim}/mem', os.O_RDONLY)):\n"
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
        scratch = kernel.run(cell("idle", "import os\nprint(os.getcwd())"), check=True).stdout.strip()
        deadline = time.monotonic() + 15
        while (session_processes(kernel.pid, scratch) or Path(scratch).exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session_processes(kernel.pid, scratch) and not Path(scratch).exists()
        assert kernel.run("%jx sessions", check=True).result_text.count("idle") <= 1  # the header only
        fresh = kernel.run(cell("idle", "print('x' in globals())"), check=True)
        assert fresh.stdout == "False\n"
        assert "session idle starts afresh: the last one ended (idle for 2 s" in fresh.stderr
    finally:
        kernel.shutdown_leaving_nothing()


def test_a_killed_kernel_ends_every_session_within_ten_seconds(data_dir, notebook_dir):
    kernel = Kernel(data_dir, notebook_dir)
    for session in ("one", "two"):
        kernel.run(cell(session, "x = 1", backend="seccomp"), check=True)
    kernel.run(cell("three", "x = 1", backend="local"), check=True)
    engine = None
    if not NO_NAMESPACES and ContainerBackend.availability().ok:
        kernel.run(cell("four", "x = 1", backend="container"), check=True)
        engine = Engine(kernel.eval(ENGINE_URL)).client
    pid = kernel.pid
    assert len(owned_processes(pid)) >= 3
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def left() -> bool:
        return bool(owned_processes(pid) or (engine and containers(engine, owner_pid=str(pid))))

    while left() and time.monotonic() - killed < 10:
        time.sleep(0.1)
    assert not owned_processes(pid), f"left after 10 s: {owned_processes(pid)}"
    assert not (engine and containers(engine, owner_pid=str(pid))), "a session's container outlived its kernel by 10 s"
    kernel.client.stop_channels()


def test_a_killed_kernel_leaves_no_group_of_a_fork(data_dir, notebook_dir):
    """A fork's group is the kernel's own making, not a template's: its templates remove it when the
    kernel is killed (no later kernel's reaper needed), as the chaos soak found it left."""
    if cgroup_mode().kind not in ("root", "delegated"):
        pytest.skip(f"forks get no group of their own here ({cgroup_mode().detail})")
    kernel = Kernel(data_dir, notebook_dir)
    kernel.run(cell("raw", "x = 1"), check=True)
    kernel.run("%jx fork raw hot", check=True)
    pid = kernel.pid

    def groups() -> list[Path]:
        return [g for parent in set(cgroup_mode().parents.values()) for g in parent.glob(fork_cgroup(pid, "*"))]

    assert groups(), "the fork runs in a group of its own"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while groups() and time.monotonic() - killed < 10:
        time.sleep(0.1)
    assert not groups(), f"a fork's group outlived its kernel by 10 s: {groups()}"
    kernel.client.stop_channels()


def fork_cell(name: str, parent: str, code: str) -> str:
    return f"%%sandbox --backend seccomp --session {name} --fork {parent}\n{code}"


def test_a_fork_starts_from_its_parents_state_and_both_go_their_own_ways(kernel, name):
    fork, grandchild, sibling = f"{name}-b", f"{name}-c", f"{name}-d"
    try:
        kernel.run(cell(name, "import os\nx = 1\nopen('f', 'w').write('parent')"), check=True)
        assert kernel.run(f"%jx fork {name} {fork}", check=True).stdout == f"session {fork} forked from {name}\n"
        kernel.run(cell(fork, "x = 2\nopen('f', 'w').write('fork')"), check=True)
        assert kernel.run(cell(name, "print(x, open('f').read())"), check=True).stdout == "1 parent\n"
        assert kernel.run(cell(fork, "print(x, open('f').read())"), check=True).stdout == "2 fork\n"
        details = json.loads(kernel.records().get(kernel.last_run()["id"])["details"])
        assert details["forked_from"] == name and details["cell"] == 2
        kernel.run(f"%jx fork {fork} {grandchild}", check=True)  # a fork of a fork
        assert kernel.run(cell(grandchild, "x += 10\nprint(x)"), check=True).stdout == "12\n"
        assert kernel.run(cell(fork, "print(x)"), check=True).stdout == "2\n"
        first = kernel.run(fork_cell(sibling, name, "print(x, open('f').read())"), check=True)
        assert first.stdout == "1 parent\n"
        assert kernel.run(fork_cell(sibling, name, "x = 5\nprint(x)"), check=True).stdout == "5\n"  # lives: runs in it
    finally:
        for session in (grandchild, fork, sibling):
            kernel.run(f"%jx end {session}")


def test_a_fork_cannot_signal_or_write_its_parent(kernel, name):
    fork = f"{name}-b"
    try:
        kernel.run(cell(name, "import os\nsecret = 1\nparent_pid, home = os.getpid(), os.getcwd()"), check=True)
        kernel.run(f"%jx fork {name} {fork}", check=True)
        attack = kernel.run(
            cell(
                fork,
                "import signal\nfor act in (lambda: os.kill(parent_pid, signal.SIGKILL), "
                "lambda: open(home + '/planted', 'w'), lambda: open(home + '/../planted', 'w')):\n"
                "    try:\n        act()\n        print('reached')\n"
                "    except OSError as error:\n        print(type(error).__name__)",
            )
        )
        outcomes = attack.stdout.split()
        assert attack.error is None and outcomes[:2] == ["PermissionError"] * 2 and "reached" not in outcomes, outcomes
        assert kernel.run(cell(name, "print(secret)"), check=True).stdout == "1\n"
    finally:
        kernel.run(f"%jx end {fork}")


def test_a_fork_of_a_busy_session_waits_for_its_cell(kernel, name):
    fork = f"{name}-b"
    try:
        kernel.run(cell(name, "import time\ntime.sleep(2)\nready = True", "--bg"), check=True)
        forked = kernel.run(f"%jx fork {name} {fork}", check=True)
        assert f"session {name} is running run" in forked.stderr, forked
        assert kernel.run(cell(fork, "print(ready)"), check=True).stdout == "True\n"
    finally:
        kernel.run(f"%jx end {fork}")


def test_bad_forks_are_one_line(kernel, name):
    for line, expected in (
        (f"%jx fork nowhere {name}", "no session 'nowhere'"),
        (f"%jx fork {name}", "%jx fork needs two session names"),
    ):
        refused = kernel.run(line)
        assert refused.stderr.startswith(f"UsageError: {expected}") and refused.stderr.count("\n") == 1, refused
    kernel.run(cell(name, "x = 1"), check=True)
    kernel.run(cell(f"{name}-b", "x = 1"), check=True)
    try:
        exists = kernel.run(f"%jx fork {name} {name}-b")
        assert exists.stderr.startswith(f"UsageError: session {name}-b exists already"), exists
    finally:
        kernel.run(f"%jx end {name}-b")


def test_a_container_session_fork_is_refused_naming_what_is_missing(kernel, name):
    usable("container")
    kernel.run(cell(name, "x = 1", backend="container"), check=True)
    refused = kernel.run(f"%jx fork {name} {name}-b")
    assert refused.stderr.startswith("UsageError: ") and refused.stderr.count("\n") == 1, refused
    assert "checkpoint of the running container (CRIU)" in refused.stderr and "criu" in refused.stderr.lower()
    assert kernel.run(cell(name, "print(x)", backend="container"), check=True).stdout == "1\n"  # untouched


def _ended_in_one_line(kernel: Kernel, name: str, backend: str, why: str) -> None:
    """The session's next cell fails in one line naming ``why``; the one after starts afresh."""
    listed = kernel.run("%jx sessions", check=True).result_text
    assert name not in listed, listed
    ended = kernel.run(cell(name, "print(kept)", backend=backend))
    run = kernel.last_run()["id"]
    assert ended.error is not None and ended.error["traceback"] == [
        f"NodeFailedError: session {name} {why} and ended; run its first cell again to start it afresh"
        f"  (run {run}; full log: %jx logs {run})"
    ], ended.error
    assert ended.stdout == "" and kernel.last_run()["status"] == "failed"
    fresh = kernel.run(cell(name, "print('kept' in globals())", backend=backend), check=True)
    assert fresh.stdout == "False\n" and "starts afresh" not in fresh.stderr


def _until(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_session_killed_from_outside_says_so_in_its_next_cell(kernel, name, backend):
    scratch = kernel.run(cell(name, "import os\nkept = 1\nprint(os.getcwd())", backend=backend), check=True)
    if backend == "container":
        container = json.loads(kernel.records().get(kernel.last_run()["id"])["details"])["container"]
        engine = Engine(kernel.eval(ENGINE_URL)).client
        kill_from_outside(engine, container)
        assert _until(lambda: not engine.api.containers(all=True, filters={"id": container})), "its container stayed"
    else:
        processes = session_processes(kernel.pid, scratch.stdout.strip())
        assert processes
        for pid in processes:
            os.kill(pid, signal.SIGKILL)
        gone = _until(lambda: not session_processes(kernel.pid, scratch.stdout.strip()))
        assert gone and _until(lambda: not Path(scratch.stdout.strip()).exists()), "its processes or files stayed"
    _ended_in_one_line(kernel, name, backend, "was killed (SIGKILL)")


def test_a_sessions_container_removed_as_an_engine_restart_does_says_so(kernel, name):
    backend = usable("container")
    kernel.run(cell(name, "kept = 1", backend=backend), check=True)
    container = json.loads(kernel.records().get(kernel.last_run()["id"])["details"])["container"]
    Engine(kernel.eval(ENGINE_URL)).client.api.remove_container(container, force=True)
    _ended_in_one_line(kernel, name, backend, "was killed (SIGKILL)")  # what an engine's restart does to it


def test_a_session_out_of_memory_says_so_in_its_next_cell(kernel, name, backend):
    """Under a cgroup the session's process is killed and its next cell says why; under rlimits
    alone (no cgroup for an ordinary account here) the cell gets MemoryError and the session lives."""
    kernel.run(cell(name, "kept = 1", "--mem 200m", backend), check=True)
    fill = "hog = bytearray(400 * 1024**2)\nhog[::4096] = b'x' * len(hog[::4096])"
    kernel.fails_as(cell(name, fill, backend=backend), "ResourceLimitError", "oom")
    details = json.loads(kernel.records().get(kernel.last_run()["id"])["details"])
    if "session_ended" in details:
        assert details["session_ended"] == "ran out of memory (limit 200m)"
        _ended_in_one_line(kernel, name, backend, "ran out of memory (limit 200m)")
    else:
        assert kernel.run(cell(name, "print(kept)", backend=backend), check=True).stdout == "1\n"
