"""Nothing leaks: a kernel that exits, or is killed mid-run, leaves no process, cgroup or open row."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import NO_NAMESPACES, Kernel, owned_processes, require

from jupyter_exec.backends.process.cgroups import cgroup_mode
from jupyter_exec.config import ExecConfig, scratch_prefix

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]


def _cgroups_of(pid: int) -> list[Path]:
    return [p for parent in set(cgroup_mode().parents.values()) for p in parent.glob(f"jx-{pid}-*")]


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_kernel_shutdown_leaves_nothing(tmp_path):
    kernel = Kernel(tmp_path / "data", tmp_path)
    pid = kernel.pid
    kernel.run("%%sandbox --backend seccomp\nprint('hi')", check=True)
    assert owned_processes(pid), "a warm worker should be waiting"
    kernel.shutdown()
    assert _wait_until(lambda: not owned_processes(pid)), owned_processes(pid)
    assert _wait_until(lambda: not _cgroups_of(pid)), _cgroups_of(pid)


def test_killed_kernel_mid_run_dies_with_it_and_is_cleared_by_the_next(tmp_path):
    kernel = Kernel(tmp_path / "data", tmp_path)
    pid = kernel.pid
    kernel.client.execute(
        "%%sandbox --backend seccomp\nimport time, subprocess\n"
        "subprocess.Popen(['sleep', '300'], start_new_session=True)\ntime.sleep(300)"
    )
    store = kernel.records()
    assert _wait_until(lambda: store.runs(1) and store.runs(1)[0]["status"] == "running")
    run_id = store.runs(1)[0]["id"]
    os.kill(pid, signal.SIGKILL)
    kernel.client.stop_channels()
    # The fork server sees its kernel go (its control socket ends with no goodbye): it kills every
    # run at once, the setsid child too, and removes the runs' cgroups and scratch directories.
    assert _wait_until(lambda: not owned_processes(pid), timeout=5), owned_processes(pid)
    assert _wait_until(lambda: not _cgroups_of(pid), timeout=5), _cgroups_of(pid)
    scratch = Path(ExecConfig().scratch_dir)
    assert _wait_until(lambda: not list(scratch.glob(f"{scratch_prefix(pid)}*")), timeout=5)

    successor = Kernel(tmp_path / "data", tmp_path)  # its Manager closes the run's record on start
    try:
        row = successor.records().get(run_id)
        assert row["status"] == "failed" and "kernel" in row["error"]
    finally:
        successor.shutdown()
        kernel.km.cleanup_resources()


@pytest.mark.parametrize("backend", ["seccomp"] + ([] if NO_NAMESPACES else ["container"]))  # rootless needs them
def test_a_kernel_shutting_down_ends_its_runs_still_going_as_cancelled(tmp_path, backend):
    """Every backend shuts down alike: what still runs is cancelled, and the kernel waits for it
    to end, so %jx runs shows it cancelled, not running, nor failed by the next kernel's reaper."""
    if backend == "container":
        from jupyter_exec.backends.container import ContainerBackend

        availability = ContainerBackend.availability()
        require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    kernel = Kernel(tmp_path / "data", tmp_path)
    kernel.start(
        f"%%sandbox --bg --backend {backend}\nimport time\nprint('going', flush=True)\ntime.sleep(300)", "going"
    )
    store = kernel.records()
    run_id = store.runs(1)[0]["id"]
    kernel.shutdown()
    row = store.get(run_id)
    assert row["status"] == "cancelled", row
