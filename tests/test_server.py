"""The side panel's REST API, served by a real JupyterLab process with a token, over runs
made by a real kernel writing the same store: lists, details, log pieces, auth, envs,
traces, and cancelling a kernel's run from outside it."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from conftest import Kernel, make_wheel

from jupyter_exec.server.logs import read_piece

pytestmark = pytest.mark.kernel
SECCOMP = "%%sandbox --backend seccomp"
API = "/jupyter-exec/api/v1"


@pytest.fixture(scope="module")
def lab_kernel(lab):
    """A kernel writing the store the lab server reads."""
    kernel = Kernel(lab["data_dir"], lab["root"])
    yield kernel
    kernel.shutdown()


def call(lab, path: str, method: str = "GET", token: str | None = "") -> tuple[int, dict]:
    """(status, JSON body) of one request; ``token=None`` sends none, "" the lab's."""
    request = urllib.request.Request(f"{lab['url']}{API}/{path}", method=method, data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"token {token or lab['token']}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _run_id(kernel: Kernel, code: str, check: bool = False) -> int:
    kernel.run(code, check=check)
    return kernel.last_run()["id"]


def test_runs_list_detail_and_errors(lab, lab_kernel):
    ok = _run_id(lab_kernel, f"{SECCOMP} --name first --mem 300m\nprint('hello')")
    bad = _run_id(lab_kernel, f"{SECCOMP} --name second\nraise ValueError('bad value\\nsecond line')")
    status, listed = call(lab, "runs")
    assert status == 200 and abs(listed["now"] - time.time()) < 60
    ids = [r["id"] for r in listed["runs"]]
    assert ids == sorted(ids, reverse=True) and {ok, bad} <= set(ids)
    rows = {r["id"]: r for r in listed["runs"]}
    assert rows[ok]["status"] == "succeeded" and rows[ok]["name"] == "first" and rows[ok]["backend"] == "seccomp"
    assert rows[ok]["duration"] > 0 and rows[ok]["kernel"] == lab_kernel.last_run()["kernel"]
    assert "peak_memory" in rows[ok] and rows[ok]["created"] <= rows[bad]["created"]
    assert rows[bad]["status"] == "failed" and rows[bad]["error"] == "ValueError: bad value"  # its type once
    assert rows[ok]["label"] == "first" and rows[ok]["batches"] == 0
    assert [r["id"] for r in call(lab, "runs?status=failed,timeout")[1]["runs"]][:1] == [bad]
    assert all(r["status"] == "succeeded" for r in call(lab, "runs?status=succeeded")[1]["runs"])
    assert len(call(lab, "runs?limit=1")[1]["runs"]) == 1

    lab_kernel.run(
        "import jupyter_exec\njupyter_exec.map('item + 1', range(6), backend='seccomp', batch_size=2)", check=True
    )
    map_id = lab_kernel.records().runs(10, columns=("id", "name"), batches=False)[0]["id"]
    rows = {r["id"]: r for r in call(lab, "runs")[1]["runs"]}
    assert rows[map_id]["label"] == "map: item + 1 (3 batches)" and max(rows) == map_id  # its batches folded
    batches = call(lab, f"runs/{map_id}")[1]["batches"]
    assert [(b["name"], b["status"]) for b in batches] == [
        (f"map {map_id}[{i}:{i + 2}]", "succeeded") for i in (0, 2, 4)
    ]

    status, detail = call(lab, f"runs/{ok}")
    assert status == 200 and detail["code"] == "print('hello')\n"
    assert detail["spec"]["limits"]["memory"] == 300 << 20 and detail["status"] == "succeeded"

    for path, code, message in [
        ("runs/999999999", 404, "no run 999999999; GET /jupyter-exec/api/v1/runs lists them"),
        ("runs/abc", 404, "no run 'abc'"),
        ("runs/abc/log", 404, "no run 'abc'"),
        ("runs?status=bogus", 400, "status=bogus: unknown"),
        ("runs?limit=0", 400, "limit='0': expected a whole number from 1 to 1000"),
        ("runs/1/log?offset=-1", 400, "offset='-1'"),
        ("nothing/here", 404, "no endpoint 'nothing/here'"),
    ]:
        status, body = call(lab, path)
        assert status == code and body["message"].startswith(message), (path, body)
        assert "\n" not in body["message"]


def test_log_pieces_from_an_offset(lab, lab_kernel):
    text = "".join(f"line {i} é€😀\n" for i in range(40))
    run_id = _run_id(lab_kernel, f"{SECCOMP}\nprint({text!r}, end='')")
    pieces, offset = [], 0
    while True:  # 7-byte pieces cut through multi-byte characters
        status, piece = call(lab, f"runs/{run_id}/log?offset={offset}&max_bytes=7")
        assert status == 200 and piece["offset"] == offset
        pieces.append(piece["text"])
        offset = piece["next_offset"]
        if piece["done"]:
            break
    log = "".join(pieces)  # what the run printed, then how it ended
    ending = log.removeprefix(text)
    assert re.fullmatch(rf"\[jupyter-exec\] run {run_id} succeeded after \d+ ms( \(peak memory .*\))?\n", ending), log
    assert offset == len(log.encode())
    _, tail = call(lab, f"runs/{run_id}/log?tail=1&max_bytes=30")
    assert log.endswith(tail["text"]) and tail["offset"] >= len(log.encode()) - 30 and tail["done"]
    _, past = call(lab, f"runs/{run_id}/log?offset={10**9}")
    assert past["text"] == "" and past["done"]
    silent = _run_id(lab_kernel, f"{SECCOMP}\nx = 1")
    piece = call(lab, f"runs/{silent}/log")[1]  # "Full log" of a run that printed nothing says so
    assert piece["done"] and piece["text"].startswith(
        f"[jupyter-exec] run {silent} printed nothing\n[jupyter-exec] run {silent} succeeded after "
    )


def test_a_character_still_being_written_waits_for_the_next_piece(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes("ab€".encode()[:-1])  # the run has written 2 of the euro sign's 3 bytes
    piece = read_piece(str(log), 0, 100, finished=False)
    assert piece["text"] == "ab" and piece["next_offset"] == 2
    log.write_bytes("ab€c".encode())
    assert read_piece(str(log), 2, 100, finished=False)["text"] == "€c"
    log.write_bytes(b"ab\xe2\x82")  # the run ended there: what is left is shown as it is
    assert read_piece(str(log), 0, 100, finished=True)["text"] == "ab\ufffd"


def test_every_route_needs_the_token(lab):
    for path, method in [
        ("runs", "GET"),
        ("runs/1", "GET"),
        ("runs/1/log", "GET"),
        ("runs/1/cancel", "POST"),
        ("envs", "GET"),
        ("traces", "GET"),
        ("traces/x", "GET"),
        ("else", "GET"),
    ]:
        for token in (None, "wrong"):
            assert call(lab, path, method, token=token)[0] in (401, 403), (path, method, token)


def test_envs_and_traces(lab, lab_kernel, tmp_path):
    wheel = make_wheel(tmp_path, "panelpkg", "1.0", "VALUE = 7\n")
    lab_kernel.run(f"{SECCOMP} --pip {wheel}\nimport panelpkg\nprint(panelpkg.VALUE)", check=True)
    status, envs = call(lab, "envs")
    assert status == 200
    env = next(e for e in envs["envs"] if any("panelpkg" in str(p) for p in e["spec"].get("pip", [])))
    assert env["status"] == "ready" and env["uses"] >= 1 and env["size"] > 0 and len(env["hash"]) >= 12

    lab_kernel.run(f"{SECCOMP} --trace panel --metric loss --minimize\n{{'loss': 0.5}}", check=True)
    lab_kernel.run(f"{SECCOMP} --trace panel\n{{'loss': 0.2}}", check=True)
    lab_kernel.run(f"{SECCOMP} --trace panel --parent root\nraise RuntimeError('no')")
    status, traces = call(lab, "traces")
    summary = next(t for t in traces["traces"] if t["name"] == "panel")
    assert status == 200 and summary["nodes"] == 3 and summary["running"] == 0
    assert summary["metric"] == "loss" and summary["maximize"] is False
    status, tree = call(lab, "traces/panel")
    root, child, failed = tree["nodes"]
    assert status == 200 and root["parent"] is None and child["parent"] == root["id"] and failed["parent"] is None
    assert tree["sota"] == child["id"] and child["metrics"] == {"loss": 0.2} and child["depth"] == 1
    assert failed["status"] == "failed" and "RuntimeError" in failed["error"] and child["run_id"] > 0
    status, body = call(lab, "traces/nope%20here")
    assert status == 404 and body["message"].startswith("no trace 'nope here'")


def test_cancel_reaches_a_run_of_a_kernel(lab, lab_kernel):
    msg_id = lab_kernel.client.execute(f"{SECCOMP}\nimport time\nprint('waiting here', flush=True)\ntime.sleep(60)")
    deadline = time.monotonic() + 30
    run, log = None, ""
    while "waiting here" not in log:  # the line arrives in the log while the run goes on
        assert time.monotonic() < deadline, "the run's line never reached its log"
        running = call(lab, "runs?status=running")[1]["runs"]
        run = running[0] if running else None
        log = call(lab, f"runs/{run['id']}/log")[1]["text"] if run else ""
        time.sleep(0.1)
    asked = time.monotonic()
    status, body = call(lab, f"runs/{run['id']}/cancel", "POST")
    assert status == 202 and body["cancel_requested"] > 0
    error = next(m["content"] for m in lab_kernel.messages(msg_id, 20) if m["msg_type"] == "error")
    assert error["ename"] == "TaskCancelledError" and time.monotonic() - asked < 5
    assert lab_kernel.records().get(run["id"])["status"] == "cancelled"
    status, body = call(lab, f"runs/{run['id']}/cancel", "POST")
    assert status == 202 and body["status"] == "cancelled"  # asked twice: the same answer, done
    done = _run_id(lab_kernel, f"{SECCOMP}\npass", check=True)
    status, body = call(lab, f"runs/{done}/cancel", "POST")
    assert status == 409 and body["message"] == f"run {done} already finished (succeeded); nothing to cancel"
    assert call(lab, "runs/999999999/cancel", "POST")[0] == 404


def test_lab_serves_the_side_panel(lab):
    """The built panel is installed where JupyterLab finds it (the page lists it, its code is served)."""
    page = urllib.request.urlopen(f"{lab['url']}/lab?token={lab['token']}", timeout=20).read().decode()
    config = json.loads(
        re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    )
    panel = next((e for e in config["federated_extensions"] if e["name"] == "jupyter-exec"), None)
    assert panel is not None, "jupyter-exec is not among JupyterLab's extensions: run scripts/setup"
    entry = urllib.request.urlopen(f"{lab['url']}/lab/extensions/jupyter-exec/{panel['load']}", timeout=20)
    assert entry.status == 200 and b"jupyter-exec" in entry.read()
