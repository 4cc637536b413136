"""Store files made by every schema this project shipped open, keep their rows and work.

The old schemas are kept here as data, the SQL each release ran (``git log --follow -p`` of
store/records.py (once store.py), trace/tables.py (once trace/store.py), envs/cache.py and
broker/records.py): files made before ``user_version`` all say 0, the broker's first file too.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import add_run

from jupyter_exec import reports
from jupyter_exec.backends.base import Outcome
from jupyter_exec.broker.records import RESTARTED, BrokerRecords
from jupyter_exec.envs.cache import EnvIndex
from jupyter_exec.errors import ApiError, StoreError
from jupyter_exec.server.queries import PanelQueries
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords
from jupyter_exec.store.schema import LATEST
from jupyter_exec.trace.tables import TraceTables

RUNS_FIRST_RELEASE = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kernel      TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    name        TEXT,
    backend     TEXT NOT NULL,
    isolation   TEXT,
    spec        TEXT NOT NULL,
    code        TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    exit_code   INTEGER,
    created     REAL NOT NULL,
    started     REAL,
    ended       REAL,
    duration    REAL,
    peak_memory INTEGER,
    cpu_seconds REAL,
    log_path    TEXT,
    details     TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""

TRACES = """
CREATE TABLE IF NOT EXISTS trace_meta (
    name     TEXT PRIMARY KEY,
    metric   TEXT NOT NULL,
    maximize INTEGER NOT NULL,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trace_nodes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    trace     TEXT NOT NULL REFERENCES trace_meta(name),
    parent    INTEGER,
    status    TEXT NOT NULL,
    code      TEXT NOT NULL,
    params    TEXT NOT NULL,
    spec      TEXT NOT NULL,
    metrics   TEXT NOT NULL DEFAULT '{}',
    error     TEXT,
    run_id    INTEGER,
    owner_pid INTEGER NOT NULL,
    created   REAL NOT NULL,
    ended     REAL
);
CREATE INDEX IF NOT EXISTS trace_nodes_trace ON trace_nodes(trace, id);
"""

ENVS = """
CREATE TABLE IF NOT EXISTS envs (
    hash      TEXT PRIMARY KEY,
    target    TEXT NOT NULL,
    path      TEXT NOT NULL,
    spec      TEXT NOT NULL,
    status    TEXT NOT NULL,          -- building | ready | failed
    size      INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    last_used REAL,
    uses      INTEGER NOT NULL DEFAULT 0,
    builds    INTEGER NOT NULL DEFAULT 0,
    build_log TEXT,
    error     TEXT
);
"""

CANCEL_COLUMN = "ALTER TABLE runs ADD COLUMN cancel_requested REAL;"

#: The broker's file as it shipped (commit 78082d6, unchanged until its runs joined the store's schema).
BROKER_FIRST_RELEASE = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    kernel TEXT,
    client_run INTEGER,
    name TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    duration REAL,
    error TEXT,
    image TEXT,
    runtime TEXT,
    limits TEXT,
    code_hash TEXT,
    exit_code INTEGER,
    peak_memory INTEGER,
    details TEXT
);
CREATE INDEX IF NOT EXISTS runs_user ON runs (user, id);
"""

#: What each release made of a store file, oldest first (commits 0d4226f, 26127ae, 88b403a, a2f0cf1).
SHIPPED = {
    "first release (runs)": RUNS_FIRST_RELEASE,
    "with traces": RUNS_FIRST_RELEASE + TRACES,
    "with the env index": RUNS_FIRST_RELEASE + TRACES + ENVS,
    "with cancel requests": RUNS_FIRST_RELEASE + TRACES + ENVS + CANCEL_COLUMN,
    # The runs table alone once had the column (the trace and env tables were made when first used).
    "runs with cancel requests, nothing else yet": RUNS_FIRST_RELEASE + CANCEL_COLUMN,
}


def _old_file(path, sql):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(sql)
    db.execute(
        "INSERT INTO runs (kernel, owner_pid, name, backend, spec, code, code_hash, status, created, ended)"
        " VALUES ('k', 1, 'old', 'local', '{\"a\": 1}', 'print(1)', 'h', 'succeeded', 1.7e9, 1.7e9 + 2)"
    )
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "trace_meta" in tables:
        db.execute("INSERT INTO trace_meta VALUES ('t', 'loss', 0, 1.7e9)")
        db.execute(
            "INSERT INTO trace_nodes (trace, status, code, params, spec, metrics, run_id, owner_pid, created, ended)"
            " VALUES ('t', 'succeeded', 'x', '{}', '{}', '{\"loss\": 0.5}', 1, 1, 1.7e9, 1.7e9 + 1)"
        )
    if "envs" in tables:
        db.execute(
            "INSERT INTO envs (hash, target, path, spec, status, created)"
            " VALUES ('e1', 'venv', '/x', '{}', 'ready', 1.7e9)"
        )
    db.commit()
    db.close()


@pytest.mark.parametrize("schema", SHIPPED, ids=list(SHIPPED))
def test_a_file_of_each_shipped_schema_opens_and_works(tmp_path, schema):
    path = tmp_path / "runs.sqlite3"
    _old_file(path, SHIPPED[schema])
    store, traces, envs = RunRecords(path), TraceTables(path), EnvIndex(path)

    old = store.get(1)
    assert (old["name"], old["status"], old["spec"], old["cancel_requested"]) == ("old", "succeeded", '{"a": 1}', None)
    run = add_run(store, "new", status=None)
    assert run == 2 and store.request_cancel(run)["cancel_requested"] > 0
    assert store.cancel_requests([1, run]) == [run]
    store.finish_run(run, Status.CANCELLED)
    trace = traces.open("t", "loss", maximize=False)
    assert [n.metrics for n in trace.nodes.values()] == ([{"loss": 0.5}] if TRACES in SHIPPED[schema] else [])
    envs.start_build("e2", "venv", tmp_path / "e2", "{}", tmp_path / "e2.log")
    assert {row["hash"] for row in envs.all()} == ({"e1", "e2"} if ENVS in SHIPPED[schema] else {"e2"})
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert _schema(path) == _schema(_fresh(tmp_path)) and old["user"] is None


def test_a_file_made_today_opens_without_migrating(tmp_path):
    path = tmp_path / "runs.sqlite3"
    add_run(RunRecords(path), "today")
    before = path.read_bytes()[:100]
    assert RunRecords(path).get(1)["name"] == "today"
    assert path.read_bytes()[:100] == before  # not even the header's change counter moved


def test_a_file_from_a_newer_release_is_refused_in_one_line(tmp_path):
    path = tmp_path / "runs.sqlite3"
    RunRecords(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(StoreError) as refused:
        RunRecords(path)
    message = str(refused.value)
    assert str(path) in message and "newer jupyter-exec" in message and "JX_DATA_DIR" in message
    assert "\n" not in message
    with pytest.raises(ApiError) as answered:  # the side panel's server says the same, as a 503
        PanelQueries(path).runs((), 10)
    assert (answered.value.status, str(answered.value)) == (503, message)


def test_kernels_opening_an_old_file_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "runs.sqlite3"
    _old_file(path, SHIPPED["first release (runs)"])
    opener = (
        "import sys; from jupyter_exec.store.records import RunRecords; s = RunRecords(sys.argv[1]);"
        " print(s.get(1)['cancel_requested'], s.request_cancel(1)['status'])"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", opener, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.split()[-1] == "succeeded"
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(runs)")]
    assert columns.count("cancel_requested") == 1


def old_broker_file(path: Path, users: tuple[str, str]) -> dict[int, dict]:
    """A broker's file as the first broker left it, with the statements it ran: a run of each user
    finished, one of the first user's still ``running`` (the broker died), and a fourth whose row
    is gone (its log stays); the rows by id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(BROKER_FIRST_RELEASE)
    made = (
        (users[0], "kernel-a", 7, "first", 1, "jupyter-exec/base:1", None, {"memory": 1 << 30}, "h1"),
        (users[1], "", None, None, 2, "jupyter-exec/base:1", "runsc", {}, "h2"),
        (users[0], "kernel-a", 9, "going", 3, "jupyter-exec/env:abc", None, {"cpus": 1.0}, "h3"),
        (users[1], "kernel-b", 1, "lost", 4, "jupyter-exec/base:1", None, {}, "h4"),
    )
    for user, kernel, client_run, name, n, image, runtime, limits, code_hash in made:
        db.execute(
            "INSERT INTO runs (user, kernel, client_run, name, status, created, image, runtime, limits, code_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, kernel, client_run, name, "queued", 1.7e9 + n, image, runtime, json.dumps(limits), code_hash),
        )
        db.execute("UPDATE runs SET status=?, started=?, image=? WHERE id=?", ("running", 1.7e9 + n + 0.5, image, n))
    for n, status, error, exit_code in ((1, "succeeded", None, 0), (2, "failed", "ZeroDivisionError: x", 1)):
        db.execute(
            "UPDATE runs SET status=?, error=?, exit_code=?, peak_memory=?, ended=?,"
            " duration=? - COALESCE(started, created), details=? WHERE id=? AND status NOT IN ('succeeded')"
            " RETURNING *",
            (status, error, exit_code, 50 << 20, 1.7e9 + 9, 1.7e9 + 9, json.dumps({"runtime": "runc"}), n),
        ).fetchone()
    db.execute("DELETE FROM runs WHERE id = 4")
    rows = {row["id"]: dict(row) for row in db.execute("SELECT * FROM runs")}
    db.close()
    return rows


KEPT = (
    "id", "user", "client_run", "name", "status", "created", "started", "ended", "duration", "error", "image",
    "runtime", "code_hash", "exit_code", "peak_memory", "details",
)  # fmt: skip


def test_a_broker_file_of_the_first_release_keeps_every_run_and_goes_on(tmp_path):
    path = tmp_path / "broker.sqlite3"
    old = old_broker_file(path, ("alice", "bob"))
    records = BrokerRecords(path)

    for run_id, row in old.items():
        now = records.get(run_id)
        assert now is not None and {k: now[k] for k in KEPT} == {k: row[k] for k in KEPT}
        assert now["kernel"] == row["kernel"] and json.loads(now["spec"])["limits"] == json.loads(row["limits"])
        assert (now["backend"], now["code"]) == ("container", "")
    assert [r["id"] for r in records.listing(None, finished=True)] == [3, 2, 1]
    assert [r["id"] for r in records.listing("alice", finished=False)] == [3]
    assert [r["id"] for r in records.listing("bob", finished=True)] == [2]

    (recovered,) = records.recover()  # the run the dead broker left going, and only it
    assert recovered["id"] == 3 and recovered["user"] == "alice"
    assert (recovered["status"], recovered["error"]) == ("failed", RESTARTED)
    assert records.get(1)["status"] == "succeeded" and records.recover() == []
    spec = RunSpec(backend="container", limits=Limits(memory=1 << 30), name="after")
    run = records.create(user="bob", kernel="k", client_run=2, spec=spec, image="i", runtime=None, code_hash="h5")
    assert run == 5  # above the run whose row was lost: its log (logs/4.log) is not overwritten
    records.mark_running(run, str(tmp_path / "logs" / "5.log"))
    finished = records.finish(run, Outcome(Status.SUCCEEDED, exit_code=0, peak_memory=1, cpu_seconds=0.5))
    assert finished and (finished["status"], finished["cpu_seconds"], finished["user"]) == ("succeeded", 0.5, "bob")
    table = reports.runs_table(records, 10)  # the kernel's `%jx runs` reads a broker's file as it reads its own
    assert list(table.index) == [5, 3, 2, 1] and list(table["status"]) == ["succeeded", "failed", "failed", "succeeded"]
    assert _schema(path) == _schema(_fresh(tmp_path))


def test_a_damaged_broker_file_is_moved_aside_and_its_run_ids_go_on(tmp_path, capfd):
    path = tmp_path / "broker.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "41.log").write_text("a run's output\n")
    records = BrokerRecords(path)
    spec = RunSpec(backend="container")
    assert (
        records.create(user="a", kernel="k", client_run=None, spec=spec, image="i", runtime=None, code_hash="h") == 42
    )
    assert "was damaged" in capfd.readouterr().err and list(tmp_path.glob("broker.sqlite3.corrupt-*"))


def _fresh(tmp_path: Path) -> Path:
    fresh = tmp_path / "fresh" / "runs.sqlite3"
    RunRecords(fresh).close()
    return fresh


def _schema(path: Path) -> list[tuple]:
    """A file's tables and indexes as SQLite holds them (spacing aside: old releases indented differently)."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    return [(kind, name, table, " ".join((sql or "").split())) for kind, name, table, sql in found]


def test_a_file_of_version_6_gains_the_connections_table_and_keeps_its_runs(tmp_path):
    from jupyter_exec.store.connections import RunConnections
    from jupyter_exec.store.schema import MIGRATIONS

    path = tmp_path / "runs.sqlite3"
    db = sqlite3.connect(path)
    for migration in (m for m in MIGRATIONS if m.version <= 6):
        db.executescript(migration.sql)
    db.execute("PRAGMA user_version = 6")
    db.close()
    _old_file(path, "")
    connections = RunConnections(path)
    connection = {"host": "index.example.org", "port": 443, "allowed": True, "reason": "", "sent": 1, "received": 2}
    connections.keep(1, [{**connection, "started": 1.7e9, "seconds": 0.5}])
    assert connections.of(1) == [{**connection, "started": 1.7e9, "seconds": 0.5}]
    assert RunRecords(path).get(1)["name"] == "old" and connections.refused([1]) == {}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LATEST
