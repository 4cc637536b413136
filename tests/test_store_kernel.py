"""The run store under faults, through real kernels: a damaged file, a full disk, two kernels
writing at once with one killed; and the ballast that keeps a full disk from costing a record."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Kernel, add_run, owned_processes, require

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import StoreError
from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords

pytestmark = pytest.mark.kernel
LOCAL = "%%sandbox --backend local"


def test_a_store_with_a_garbage_header_is_moved_aside_and_the_next_cell_recorded(tmp_path):
    data = tmp_path / "data"
    store = RunRecords(data / "runs.sqlite3")
    for i in range(5):
        add_run(store, f"old-{i}")
    store.close()
    with open(data / "runs.sqlite3", "r+b") as file:
        file.write(os.urandom(100))  # the header, as a crash on a bad disk leaves it

    kernel = Kernel(data, tmp_path)
    try:
        moved = [p for p in data.glob("runs.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-journal"))]
        warning = kernel.loaded.stderr
        assert len(moved) == 1 and warning.count("\n") == 1, warning
        assert str(moved[0]) in warning and "jupyter-exec store recover" in warning
        assert kernel.run(f"{LOCAL}\nprint('after')", check=True).stdout == "after\n"
        run = kernel.last_run()
        assert run["status"] == "succeeded" and run["id"] > 5  # no old run's id (or log) is taken
        doctor = kernel.run("%jx doctor", check=True).stdout
        assert f"ok   store    {data / 'runs.sqlite3'}: 1 run, " in doctor and " free" in doctor, doctor
        assert f"damaged store kept for recovery: {moved[0]}" in doctor

        recovered = subprocess.run(
            [sys.executable, "-m", "jupyter_exec.cli", "store", "recover", str(moved[0])],
            env={**os.environ, "JX_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert recovered.returncode == 0, recovered.stderr
        shown = kernel.run("%jx runs", check=True).result_text
        assert all(f"old-{i}" in shown for i in range(5)), shown
    finally:
        kernel.shutdown()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs, as a data directory."""
    require(os.geteuid() == 0, "root, to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)  # near the end a write is partial, and the next one fails
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_data_directory_refuses_a_cell_and_a_filling_one_keeps_its_record(small_disk, tmp_path):
    kernel = Kernel(small_disk, tmp_path, env={"JX_MIN_FREE_SPACE": "2m"})
    try:
        filler = _fill(small_disk)
        before = kernel.records().runs(1)
        refused = kernel.run(f"{LOCAL}\nprint('ran')")
        assert refused.error is not None and refused.error["ename"] == "StoreError", refused
        assert len(refused.error["traceback"]) == 1
        line = refused.error["traceback"][0]
        assert f"{small_disk} has 0 B free" in line and "jupyter-exec envs gc" in line and "JX_DATA_DIR" in line
        assert "ran" not in refused.stdout and kernel.records().runs(1) == before

        filler.unlink()
        assert kernel.run(f"{LOCAL}\nprint('ran')", check=True).stdout == "ran\n"

        flood = kernel.run(
            f"{LOCAL}\nimport sys\nfor i in range(300):\n    sys.stdout.write('x' * 99999 + '\\n')\nprint('end')",
            timeout=300,
        )
        assert flood.error is None, flood.error
        run = kernel.last_run()
        assert run["status"] == Status.SUCCEEDED
        details = json.loads(kernel.records().get(run["id"])["details"])
        assert details["log"].startswith("log truncated at") and str(small_disk / "logs") in details["log"]
        assert f"run {run['id']}: log truncated at" in flood.stderr  # said in the cell, once
        log = (small_disk / "logs" / f"{run['id']}.log").read_bytes()
        assert log.endswith(f"[jupyter-exec] {details['log']}\n".encode())
        assert kernel.run(f"%jx logs {run['id']}").stdout.rstrip().endswith(details["log"])

        again = kernel.run(f"{LOCAL}\nprint('ran')")  # the disk is still (nearly) full
        assert again.error is not None and again.error["ename"] == "StoreError"
    finally:
        kernel.shutdown()


def test_the_ballast_lets_a_run_be_finished_on_a_disk_filled_under_it(small_disk):
    store = RunRecords(small_disk / "runs.sqlite3")
    store.reserve.ensure(0)
    assert store.reserve.path.stat().st_size == 1 << 20
    run = add_run(store, "under way", status=None)
    _fill(small_disk)
    store.finish_run(run, Status.SUCCEEDED, details={"out": "x" * 3000})  # needs pages the disk no longer has
    assert store.get(run)["status"] == Status.SUCCEEDED and not store.reserve.path.exists()
    with pytest.raises(StoreError) as full:  # the ballast is spent: the next write says why, in one line
        for i in range(50):
            add_run(store, f"more-{i}", code="x" * 3000)
    assert str(full.value).startswith(f"no room to record a run: {small_disk} has")


LOOP = """
from jupyter_exec import RunSpec, current_manager
manager = current_manager()
for i in range({runs}):
    run = manager.run("pass", RunSpec(backend="local", name=f"{tag}-{{i}}"))
    print(i, run.run_id, flush=True)
"""


def test_two_kernels_writing_at_once_one_killed_lose_no_runs(tmp_path):
    runs = 500
    data = tmp_path / "data"
    writer, victim = Kernel(data, tmp_path), Kernel(data, tmp_path)
    victim_pid = victim.pid
    try:
        writing = writer.client.execute(LOOP.format(runs=runs, tag="a"))
        doomed = victim.client.execute(LOOP.format(runs=runs, tag="b"))
        done_b, said_b = [], ""
        for msg in victim.messages(doomed, timeout=300):
            if msg["msg_type"] == "stream":
                said_b += msg["content"]["text"]
                done_b = [int(line.split()[0]) for line in said_b.splitlines()]
                if len(done_b) >= runs // 2:
                    os.kill(victim_pid, signal.SIGKILL)
                    break
            assert msg["msg_type"] != "error", msg["content"]
        said_a, errors_a = "", []
        for msg in writer.messages(writing, timeout=600):
            if msg["msg_type"] == "stream":
                said_a += msg["content"]["text"]
            elif msg["msg_type"] == "error":
                errors_a.append(msg["content"])
        assert not errors_a and "locked" not in said_a + said_b
        assert len(said_a.splitlines()) == runs

        closed = writer.eval("current_manager().reap()['runs']")  # as the next kernel to start does
        assert closed <= 1  # the run under way when the kernel died
        rows = writer.records().runs(10 * runs, columns=("name", "status"))
        names = [row["name"] for row in rows]
        assert len(names) == len(set(names)), "a run was recorded twice"
        assert {f"a-{i}" for i in range(runs)} <= set(names)
        assert {f"b-{i}" for i in done_b} <= set(names), "a run the killed kernel finished is missing"
        assert len([n for n in names if n.startswith("b-")]) - len(done_b) <= 1
        assert all(row["status"] in (Status.SUCCEEDED, Status.FAILED) for row in rows)
        check = subprocess.run(
            [sys.executable, "-m", "jupyter_exec.cli", "store", "check"],
            env={**os.environ, "JX_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0 and "integrity: ok" in check.stdout, check.stdout + check.stderr
    finally:
        writer.shutdown()
        victim.client.stop_channels()
        victim.km.shutdown_kernel(now=True)
    deadline = time.monotonic() + 10
    while owned_processes(victim_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(victim_pid) and not owned_processes(victim_pid)
