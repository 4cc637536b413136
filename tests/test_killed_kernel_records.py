"""A killed kernel's runs read ``failed`` to whatever opens the store next: the side panel and the
``jupyter-exec`` command too, not only a later kernel (a kernel's own start is tested with the
kernels, in test_cleanup.py and the chaos test); and a later kernel removes its scratch."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import add_run

from jupyter_exec.config import ExecConfig, scratch_prefix
from jupyter_exec.manager import Manager
from jupyter_exec.server.queries import PanelQueries
from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords

ORPHANED = "the kernel running it exited before it finished"


def _dead_pid() -> int:
    """The pid of a process that has exited (a killed kernel's)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_side_panel_reads_a_killed_kernels_runs_as_failed(tmp_path):
    store = RunRecords(tmp_path / "runs.sqlite3")
    orphan = add_run(store, "orphan", status=None, owner_pid=_dead_pid())
    alive = add_run(store, "alive", status=None, owner_pid=os.getpid())
    panel = PanelQueries(tmp_path / "runs.sqlite3")
    rows = {row["id"]: row for row in panel.runs((), 10)["runs"]}
    assert (rows[orphan]["status"], rows[orphan]["error"]) == (Status.FAILED, ORPHANED)
    assert rows[alive]["status"] == Status.QUEUED  # a live kernel's run is its own to finish
    later = add_run(store, "killed after the panel opened the store", status=None, owner_pid=_dead_pid())
    assert panel.run(later)["status"] == Status.FAILED


def test_the_jupyter_exec_command_closes_them_when_it_opens_the_store(tmp_path):
    store = RunRecords(tmp_path / "runs.sqlite3")
    env = {**os.environ, "JX_DATA_DIR": str(tmp_path)}
    for command in (["envs", "list"], ["store", "check"]):
        orphan = add_run(store, "orphan", status=None, owner_pid=_dead_pid())
        done = subprocess.run([sys.executable, "-m", "jupyter_exec.cli", *command], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        row = store.get(orphan)
        assert row is not None and (row["status"], row["error"]) == (Status.FAILED, ORPHANED), command


def test_a_later_kernel_removes_a_dead_kernels_scratch(tmp_path):
    """The second line, for a kernel killed before its fork server was up to remove its scratch."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    dead = scratch / f"{scratch_prefix(_dead_pid())}7-abcd"
    mine = scratch / f"{scratch_prefix(os.getpid())}7-abcd"
    for folder in (dead, mine):
        (folder / "left").mkdir(parents=True)
    manager = Manager(ExecConfig(data_dir=str(tmp_path / "data"), scratch_dir=str(scratch)))
    try:
        assert manager.reaped["scratch"] == 1
        assert not dead.exists() and mine.exists()
    finally:
        manager.shutdown()
