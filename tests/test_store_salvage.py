"""``jupyter-exec store check | vacuum | recover``; a damaged store moved aside on opening; the
one-line errors of a locked or unreadable one."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import add_run, require

from jupyter_exec.errors import StoreError
from jupyter_exec.status import Status
from jupyter_exec.store import opening
from jupyter_exec.store.records import RunRecords
from jupyter_exec.store.salvage import salvage
from jupyter_exec.store.schema import LATEST
from jupyter_exec.trace.tables import TraceTables

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "jupyter_exec.cli"]


def _store(path: Path, runs: int) -> None:
    """A store with ``runs`` finished runs (code of varied length, some spilling onto overflow
    pages) and a small trace."""
    store, traces = RunRecords(path), TraceTables(path)
    for i in range(runs):
        run = store.create_run(
            kernel="k",
            owner_pid=1,
            name=f"run-{i}",
            backend="local",
            isolation="none",
            spec={"i": i},
            code=f"print({i})\n" * (1 + i % 7) + ("# long\n" * 900 if i % 50 == 0 else ""),
            code_hash=f"{i:064x}",
        )
        store.mark_running(run, f"logs/{run}.log")
        store.finish_run(run, Status.SUCCEEDED, exit_code=0, details={"n": i})
    trace = traces.open("t")
    node = traces.add(trace, None, "x = 1", params={"lr": 0.1})
    traces.finish(trace, node, Status.SUCCEEDED, {"score": 0.9}, run_id=1)
    store.close()
    traces.close()


def _rows(path: Path, table: str = "runs") -> dict[int, dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return {row["id"]: dict(row) for row in db.execute(f"SELECT * FROM {table}")}


def _readable(path: Path, ids) -> dict[int, dict]:
    """The rows SQLite itself still returns from a damaged file, asked one id at a time."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    found = {}
    for run_id in ids:
        try:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            found[run_id] = dict(row)
    return found


def _last_page_of_runs(path: Path) -> None:
    """Add runs to ``path`` until the file's last page is a leaf of the runs table (the page the
    newest runs are written to)."""
    for extra in range(200):
        with sqlite3.connect(path) as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            last = db.execute("SELECT name, pagetype FROM dbstat WHERE pageno = ?", (pages,)).fetchone()
        if last == ("runs", "leaf"):
            return
        store = RunRecords(path)
        add_run(store, f"extra-{extra}")
        store.close()
    raise AssertionError("the runs table never ended the file")


def _tear_last_page(path: Path) -> None:
    """A torn write: the second half of the last page is whatever was on the disk (random here)."""
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size - page // 2)
        file.write(os.urandom(page // 2))


def test_store_check_reports_the_store_and_vacuum_gives_free_pages_back(tmp_path):
    path = tmp_path / "runs.sqlite3"
    _store(path, 200)
    env = {**os.environ, "JX_DATA_DIR": str(tmp_path)}
    check = subprocess.run([*CLI, "store", "check"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0].startswith(f"{path}: 200 runs, ") and "wal journal on " in lines[0] and " free" in lines[0]
    assert f"schema version {LATEST}, integrity: ok" in lines[1]
    assert [line.split() for line in lines if line.strip().startswith(("runs ", "trace_nodes "))] == [
        ["runs", "200", "rows"],
        ["trace_nodes", "1", "rows"],
    ]
    assert any(line.strip().startswith("oldest run ") and ", newest " in line for line in lines)

    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM runs WHERE id > 20")  # free pages stay in the file until a vacuum
    before = path.stat().st_size
    vacuum = subprocess.run([*CLI, "store", "vacuum"], env=env, capture_output=True, text=True, timeout=60)
    assert vacuum.returncode == 0, vacuum.stderr
    assert path.stat().st_size < before * 0.6 and len(_rows(path)) == 20  # the schema itself takes some pages

    with open(path, "r+b") as file:
        file.write(b"\0" * 100)
    damaged = subprocess.run([*CLI, "store", "check"], env=env, capture_output=True, text=True, timeout=60)
    assert damaged.returncode == 1 and f"PROBLEM: {path} is damaged" in damaged.stdout
    assert path.read_bytes()[:100] == b"\0" * 100  # a check changes nothing, not even a damaged file


@pytest.mark.parametrize("with_sqlite3", [False, True], ids=["python pages", "sqlite3 .recover too"])
def test_recover_salvages_the_intact_rows_of_a_torn_last_page(tmp_path, with_sqlite3):
    if with_sqlite3:
        require(shutil.which("sqlite3") is not None, "the sqlite3 command (apt-get install sqlite3)")
    path = tmp_path / "runs.sqlite3"
    _store(path, 300)
    _last_page_of_runs(path)
    original = _rows(path)
    _tear_last_page(path)
    intact = {i: row for i, row in _readable(path, original).items() if row == original[i]}
    assert len(intact) < len(original), "the tear damaged no run: the test proves nothing"

    into = tmp_path / "recovered" / "runs.sqlite3"
    done = subprocess.run(
        [*CLI, "store", "recover", str(path), "--into", str(into), *([] if with_sqlite3 else ["--no-sqlite3"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    recovered = _rows(into)
    assert set(intact) <= set(recovered), f"intact rows not salvaged: {sorted(set(intact) - set(recovered))}"
    assert all(recovered[i] == original[i] for i in recovered), "a salvaged row differs from what was written"
    lost = len(original) - len(recovered)
    assert 0 < lost <= 40, f"{lost} runs lost to a tear of half a page"
    assert _rows(into, "trace_nodes")[1]["metrics"] == '{"score": 0.9}'
    assert f"runs {len(recovered)} found, {len(recovered)} added" in " ".join(done.stdout.split())

    again = subprocess.run(
        [*CLI, "store", "recover", str(path), "--into", str(into), "--no-sqlite3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and len(_rows(into)) == len(recovered)  # nothing added twice


def test_salvage_reads_a_file_whose_header_is_garbage_and_its_wal(tmp_path):
    path = tmp_path / "runs.sqlite3"
    _store(path, 120)
    writer = RunRecords(path)  # rows written after a checkpoint live only in the WAL until the next one
    for i in range(30):
        add_run(writer, f"late-{i}", Status.FAILED)
    crashed = tmp_path / "crashed.sqlite3"  # the files as a crash leaves them
    shutil.copyfile(path, crashed)
    shutil.copyfile(f"{path}-wal", f"{crashed}-wal")
    original = _rows(path)
    writer.close()
    with open(crashed, "r+b") as file:
        file.write(b"\xde\xad" * 50)  # the 100-byte header

    found = salvage(crashed, use_sqlite3=False)
    assert found.rows["runs"] == original
    assert len(original) == 150
    Path(f"{crashed}-wal").unlink()
    assert len(salvage(crashed, use_sqlite3=False).rows["runs"]) == 120  # the late runs were in the WAL only


def test_a_damaged_store_is_moved_aside_and_ids_go_on_above_its_own(tmp_path, capsys):
    path = tmp_path / "runs.sqlite3"
    _store(path, 40)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "57.log").write_text("an old run's log\n")
    with open(path, "r+b") as file:
        file.write(b"not a database, not at all" * 4)

    store = RunRecords(path)
    warning = capsys.readouterr().err
    moved = sorted(tmp_path.glob("runs.sqlite3.corrupt-*"))
    assert len(moved) == 1 and warning.count("\n") == 1
    assert str(path) in warning and str(moved[0]) in warning and "jupyter-exec store recover" in warning
    assert add_run(store, "new") == 58  # above both the damaged file's runs (40) and the last log (57)
    assert TraceTables(path).open("t2") is not None and capsys.readouterr().err == ""  # warned once


def test_a_store_locked_too_long_is_one_line_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite3"
    RunRecords(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        monkeypatch.setattr(opening, "BUSY_TIMEOUT", 0.5)
        store = RunRecords(path)  # reading goes on beside a writer (WAL); writing waits, then says why
        with pytest.raises(StoreError) as refused:
            add_run(store, "waits")
    finally:
        holder.kill()
        holder.wait()
    message = str(refused.value)
    assert str(path) in message and "locked" in message and "fuser" in message and "\n" not in message


def test_a_store_the_user_cannot_read_is_one_line_naming_it(tmp_path):
    require(
        shutil.which("runuser") is not None and subprocess.run(["id", "jx-user"], capture_output=True).returncode == 0,
        "the ordinary test account (scripts/setup as root makes jx-user)",
    )
    shared = Path(tempfile.mkdtemp(prefix="jx-unreadable-"))  # a place jx-user can reach
    data = shared / "data"
    data.mkdir()
    RunRecords(data / "runs.sqlite3").close()
    shared.chmod(0o755)
    data.chmod(0o755)  # the directory can be read, the store cannot
    (data / "runs.sqlite3").chmod(0o600)
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "as-user"),
            "python",
            "-c",
            "from jupyter_exec.errors import StoreError\n"
            "from jupyter_exec.store.records import RunRecords\n"
            "try:\n    RunRecords(__import__('sys').argv[1])\n"
            "except StoreError as error:\n    print(''.join(error._render_traceback_()))",
            str(data / "runs.sqlite3"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,  # the tree under test comes first on sys.path where the account can read it, else its wheel
    )
    shutil.rmtree(shared)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("StoreError: cannot use the run store") and "\n" not in line
    assert str(data) in line and "permission denied" in line and "JX_DATA_DIR" in line
