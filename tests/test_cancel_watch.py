"""Cancelling a run from outside its kernel: a request in the store, the owning Manager's
watcher, ``%jx cancel N`` across kernels, and old store files gaining the column."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from jupyter_exec.cancel_watch import ask_cancel
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import TaskCancelledError
from jupyter_exec.manager import Manager
from jupyter_exec.spec import RunSpec
from jupyter_exec.store.records import RunRecords

BACKEND = "local"
LONG = "import time\nprint('waiting', flush=True)\ntime.sleep(60)"


@pytest.fixture(scope="module")
def manager(data_dir):
    """A Manager in this process on the session's store, so the session kernel sees its runs."""
    manager = Manager(ExecConfig(data_dir=str(data_dir)))
    yield manager
    manager.shutdown()


class Started:
    """A long run of ``manager`` on a thread: its id once recorded, its error once it ends."""

    def __init__(self, manager: Manager, code: str = LONG) -> None:
        self.run_id: int | None = None
        self.error: BaseException | None = None
        self.ended = threading.Event()
        recorded = threading.Event()

        def events(event: dict) -> None:
            if event["kind"] == "created":
                self.run_id = event["run_id"]
                recorded.set()

        def work() -> None:
            try:
                manager.run(code, RunSpec(backend=BACKEND), on_event=events)
            except BaseException as error:  # the test asserts on it
                self.error = error
            finally:
                self.ended.set()
                recorded.set()

        threading.Thread(target=work, daemon=True).start()
        assert recorded.wait(30)
        deadline = time.monotonic() + 30
        while manager.records.get(self.run_id)["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)


def test_a_request_in_the_store_cancels_the_run(manager, data_dir):
    run = Started(manager)
    asked = time.monotonic()
    other = RunRecords(data_dir / "runs.sqlite3")  # another process's view of the store
    assert other.request_cancel(run.run_id)["status"] == "running"
    assert run.ended.wait(10), "the run was not cancelled"
    assert time.monotonic() - asked < 3
    assert isinstance(run.error, TaskCancelledError)
    row = other.get(run.run_id)
    assert row["status"] == "cancelled" and row["cancel_requested"] is not None
    # A finished run is left alone: no request is recorded, the row says why
    assert other.request_cancel(run.run_id)["status"] == "cancelled"
    assert other.request_cancel(10**9) is None


def test_short_runs_are_never_looked_at(manager):
    watcher = manager._cancel_watch
    for _ in range(3):  # settle: a previous test's spell may still be ending
        looks = watcher.looks
        time.sleep(0.4)
        if watcher.looks == looks:
            break
    looks = watcher.looks
    started = time.monotonic()
    for _ in range(15):  # one after another: together far longer than the delay
        manager.run("import time\ntime.sleep(0.05)", RunSpec(backend=BACKEND))
    assert time.monotonic() - started > 0.75
    time.sleep(0.5)
    assert watcher.looks == looks


def test_jx_cancel_reaches_a_run_of_another_kernel(manager, kernel):
    run = Started(manager)
    cell = kernel.run(f"%jx cancel {run.run_id}", check=True)
    assert cell.stdout.strip() == f"run {run.run_id} cancelled by its kernel ({manager.kernel_id})"
    assert run.ended.wait(10) and isinstance(run.error, TaskCancelledError)
    again = kernel.run(f"%jx cancel {run.run_id}", check=True)
    assert again.stdout.strip() == f"run {run.run_id} already finished (cancelled)"
    assert kernel.run("%jx cancel 999999999").stderr.startswith("UsageError: no run 999999999")


def test_a_run_whose_kernel_died_is_closed_at_once(tmp_path):
    store = RunRecords(tmp_path / "runs.sqlite3")
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = store.create_run(
        kernel="gone",
        owner_pid=dead.pid,
        name=None,
        backend="local",
        isolation="subprocess",
        spec={},
        code="pass",
        code_hash="0",
    )
    store.mark_running(run_id, "")
    row = ask_cancel(store, run_id)
    assert row["status"] == "failed" and "exited" in row["error"]
