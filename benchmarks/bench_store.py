"""The run store against plain SQLite doing the same work.

    .venv/bin/python benchmarks/bench_store.py [--runs 2000] [--quick] [--json]

1. A run's record: ``create_run`` + ``mark_running`` + ``finish_run`` against the same three
   statements through a bare ``sqlite3`` connection in WAL mode; and the same record with the
   free-space guard before it (``Room.check``: two statvfs, the ballast's stat) against without.
   Target: the guard adds <= 0.02 ms a run.
2. Opening: ``RunRecords(path)`` of an existing store (journal mode, migrations found done, the
   first-read probes) against ``sqlite3.connect`` + one SELECT. No target: it is paid once per
   kernel.
3. Salvage: reading every row of the healthy store 1. wrote (a row per call) page by page in
   Python against ``sqlite3 FILE .dump`` (SQLite reading every row through its own b-tree
   code; the ``.recover`` of Debian 12's sqlite3 3.40.1 fails on every file with "SQL logic
   error"). Target <= 5x (pure Python against C; seconds for a large store, paid once).

Each pair is timed in turn, call by call.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from speed_rows import Row, options, pair, report, rounds
from timing import LoadWatch, interleaved

from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords
from jupyter_exec.store.salvage import salvage
from jupyter_exec.store.space import Reserve, Room

_INSERT = (
    "INSERT INTO runs (kernel, owner_pid, name, backend, isolation, spec, code, code_hash, status, created)"
    " VALUES ('k', 1, NULL, 'local', 'none', '{}', 'pass', '0', 'queued', ?)"
)


def main() -> None:
    args = options(__doc__, runs=2000, quick_runs=200).parse_args()
    work = Path(tempfile.mkdtemp(prefix="jx-bench-store-"))
    try:
        rows = [*record(work, rounds(args)), opening(work), *salvaging(work)]
    finally:
        shutil.rmtree(work)
    report(rows, args)


def record(work: Path, runs: int) -> list[Row]:
    store = RunRecords(work / "ours.sqlite3")
    room = Room([work], Reserve(store.path))

    def ours() -> None:
        run = store.create_run(
            kernel="k", owner_pid=1, name=None, backend="local", isolation="none", spec={}, code="pass", code_hash="0"
        )
        store.mark_running(run, None)
        store.finish_run(run, Status.SUCCEEDED)

    def guarded() -> None:
        room.check(32 << 20)
        ours()

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

    load = LoadWatch()
    times = interleaved({"ours": ours, "bare": bare, "guarded": guarded}, runs // 2, load=load)
    work_done = "a run's record: insert `queued`, mark running, finish"
    return [
        pair(
            "parts", "store.record", work_done, ("`RunRecords`", times["ours"]), ("bare `sqlite3`", times["bare"]), load
        ),
        pair(
            "parts",
            "store.guard",
            work_done,
            ("`RunRecords` after the free-space guard", times["guarded"]),
            ("`RunRecords` alone", times["ours"]),
            load,
        ),
    ]


def opening(work: Path) -> Row:
    path = work / "ours.sqlite3"

    def bare() -> None:
        db = sqlite3.connect(path)
        db.execute("SELECT max(id) FROM runs").fetchone()
        db.close()

    load = LoadWatch()
    times = interleaved({"ours": lambda: RunRecords(path).close(), "bare": bare}, 50, load=load)
    return pair(
        "parts",
        "store.open",
        "opening an existing store",
        ("`RunRecords(path)`", times["ours"]),
        ("`sqlite3.connect` + one SELECT", times["bare"]),
        load,
    )


def salvaging(work: Path) -> list[Row]:
    path = work / "ours.sqlite3"  # `record` wrote a row for each of its calls into it
    RunRecords(path).close()
    if shutil.which("sqlite3") is None:
        print("salvage: the sqlite3 command is not installed; nothing to compare with")
        return []
    load = LoadWatch()
    times = interleaved(
        {
            "ours": lambda: salvage(path, use_sqlite3=False),
            "bare": lambda: subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, check=True),
        },
        5,
        load=load,
    )
    return [
        pair(
            "parts",
            "store.salvage",
            f"reading every row of a {path.stat().st_size >> 10} KiB store",
            ("page by page in Python (salvage)", times["ours"]),
            ("`sqlite3 FILE .dump`", times["bare"]),
            load,
        )
    ]


if __name__ == "__main__":
    main()
