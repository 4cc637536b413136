"""The run store's guards and salvage against plain SQLite.

    .venv/bin/python benchmarks/bench_store.py [--runs 2000]

1. A run's record: ``create_run`` + ``mark_running`` + ``finish_run`` against the same three
   statements through a bare ``sqlite3`` connection in WAL mode, and what the free-space
   guard (``Room.check``: two statvfs, the ballast's stat) adds to it. Target: the guard
   adds ≤ 0.02 ms a run.
2. Opening: ``RunRecords(path)`` of an existing store (journal mode, migrations found done, the
   first-read probes) against ``sqlite3.connect`` + one SELECT. Reported, no target: it is
   paid once per kernel.
3. Salvage: reading every row of a healthy store of ``--runs`` runs (those 1. wrote) page by
   page in Python against ``sqlite3 FILE .dump`` (SQLite reading every row through its own b-tree
   code; the ``.recover`` of Debian 12's sqlite3 3.40.1 fails on every file with "SQL logic
   error"). Target ≤ 5× (pure Python against C; seconds for a large store, paid once).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from timing import median_ms

from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords
from jupyter_exec.store.salvage import salvage
from jupyter_exec.store.space import Reserve, Room

_INSERT = (
    "INSERT INTO runs (kernel, owner_pid, name, backend, isolation, spec, code, code_hash, status, created)"
    " VALUES ('k', 1, NULL, 'local', 'none', '{}', 'pass', '0', 'queued', ?)"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="jx-bench-store-"))
    try:
        record(work, runs)
        opening(work)
        salvaging(work, runs)
    finally:
        shutil.rmtree(work)


def record(work: Path, runs: int) -> None:
    store = RunRecords(work / "ours.sqlite3")
    room = Room([work], Reserve(store.path))

    def ours() -> None:
        run = store.create_run(
            kernel="k", owner_pid=1, name=None, backend="local", isolation="none", spec={}, code="pass", code_hash="0"
        )
        store.mark_running(run, None)
        store.finish_run(run, Status.SUCCEEDED)

    RunRecords(work / "raw.sqlite3").close()  # the same schema, then written without us
    raw = sqlite3.connect(work / "raw.sqlite3", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")

    def bare() -> None:
        run = raw.execute(_INSERT, (time.time(),)).lastrowid
        raw.execute("UPDATE runs SET status='running', started=? WHERE id=?", (time.time(), run))
        raw.execute(
            "UPDATE runs SET status='succeeded', ended=?, duration=0, details='{}' WHERE id=? AND status NOT IN"
            " ('cancelled', 'failed', 'oom', 'succeeded', 'timeout')",
            (time.time(), run),
        )

    theirs, mine = median_ms(bare, runs), median_ms(ours, runs)
    guard = median_ms(lambda: room.check(32 << 20), runs)
    print(
        f"run record: bare sqlite3 {theirs:.3f} ms, RunRecords {mine:.3f} ms: {mine / theirs:.2f}x;"
        f" Room.check {guard:.3f} ms"
    )


def opening(work: Path) -> None:
    path = work / "ours.sqlite3"

    def bare() -> None:
        db = sqlite3.connect(path)
        db.execute("SELECT max(id) FROM runs").fetchone()
        db.close()

    def ours() -> None:
        RunRecords(path).close()

    theirs, mine = median_ms(bare, 50), median_ms(ours, 50)
    print(f"open: bare sqlite3 {theirs:.3f} ms, RunRecords {mine:.3f} ms")


def salvaging(work: Path, runs: int) -> None:
    path = work / "ours.sqlite3"  # `record` wrote a row for each of its --runs calls into it
    RunRecords(path).close()
    if shutil.which("sqlite3") is None:
        print("salvage: the sqlite3 command is not installed; nothing to compare with")
        return

    def bare() -> None:
        subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, check=True)

    def ours() -> None:
        found = salvage(path, use_sqlite3=False)
        assert len(found.rows["runs"]) >= runs, len(found.rows["runs"])

    theirs, mine = median_ms(bare, 5), median_ms(ours, 5)
    print(
        f"salvage of {path.stat().st_size >> 10} KiB: sqlite3 .dump {theirs:.1f} ms, page scan {mine:.1f} ms: "
        f"{mine / theirs:.2f}x"
    )


if __name__ == "__main__":
    main()
