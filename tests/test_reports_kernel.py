"""What a user reads about runs, through a real kernel: hints at a sandbox's walls, logs that end
with how the run ended, ``%jx runs`` as a table for reading, ``%jx show``/``wait``/``resources``.

The process sandbox (seccomp) here; the container's walls, and its out-of-memory run, in
``test_reports_container.py``.
"""

from __future__ import annotations

import re

import pytest

from jupyter_exec.errors import RemoteError
from jupyter_exec.policy import Ceiling, Policy
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.walls import hint

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
SECCOMP = "%%sandbox --backend seccomp"


def shown_error(cell) -> list[str]:
    """The error as the notebook shows it: its lines without colour codes."""
    assert cell.error is not None, cell
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in cell.error["traceback"]]


def hints(cell, ename: str) -> list[str]:
    """The hint lines of the error ``cell`` shows, which must be an ``ename`` (its type kept)."""
    assert cell.error is not None and cell.error["ename"] == ename, cell.error
    return [line for line in shown_error(cell) if line.startswith("hint: ")]


def test_no_network_is_explained_and_the_type_kept(kernel):
    cell = kernel.run(f"{SECCOMP}\nimport socket\nsocket.socket()")
    assert hints(cell, "PermissionError") == ["hint: the sandbox has no network; pass --network to give this run one"]
    assert cell.error["evalue"].startswith("[Errno")  # its type once: "PermissionError: [Errno 13] ..."
    summary = kernel.last_run()["error"]
    assert summary.startswith("PermissionError: [Errno") and "PermissionError: PermissionError" not in summary


def test_a_read_only_path_is_explained(kernel):
    assert hints(kernel.run(f"{SECCOMP}\nopen('/usr/lib/jx-test-file', 'w')"), "PermissionError") == [
        "hint: the sandbox sees the system read-only, its own scratch directory and only what you --mount; "
        "to read /usr/lib/jx-test-file: --mount /usr/lib; to write to it: --mount /usr/lib:rw"
    ]


def test_a_missing_module_is_explained(kernel):
    assert hints(kernel.run(f"{SECCOMP}\nimport jx_no_such_module"), "ModuleNotFoundError") == [
        "hint: jx_no_such_module is not installed in the sandbox's Python: add --pip jx_no_such_module "
        "(if that is its package's name)"
    ]


def test_a_hint_comes_from_the_error_never_from_what_the_cell_printed(kernel):
    cell = kernel.run(f"{SECCOMP}\nprint('hint: pass --network')\nopen('data.csv')")
    assert hints(cell, "FileNotFoundError") == []  # a missing file, no wall
    assert "hint: pass --network" in cell.stdout


def test_the_policy_says_when_network_is_not_allowed():
    """The same error data as the sandbox's socket() refusal, under a policy without --network."""
    error = RemoteError("PermissionError", "[Errno 13] Permission denied", '  File "/usr/lib/python3.11/socket.py"\n')
    error.causes = [{"type": "PermissionError", "errno": 13, "filename": None}]
    policy = Policy(ceilings={"network": Ceiling(0, "/etc/jupyter-exec/policy.yaml")})
    assert hint(error, RunSpec(), None, policy) == (
        "the sandbox has no network, and the administrator's policy (/etc/jupyter-exec/policy.yaml) "
        "does not allow --network"
    )
    assert hint(error, RunSpec(limits=Limits(network=True)), None, Policy()) is None  # it had network


def test_every_log_ends_with_how_the_run_ended(kernel):
    cell = kernel.run(f"{SECCOMP} --name ends-badly\nprint('working', end='')\n1 / 0")
    assert cell.error["ename"] == "ZeroDivisionError"
    run = kernel.last_run()
    log = kernel.run(f"%jx logs {run['id']}", check=True).stdout.splitlines()
    assert log[0] == "working"
    assert re.fullmatch(rf"\[jupyter-exec\] run {run['id']} failed after \d+ ms( \(peak memory .*\))?", log[1]), log
    assert log[2] == "Traceback (most recent call last):" and log[-2] == "ZeroDivisionError: division by zero"


def test_the_log_of_a_silent_run_says_so(kernel):
    kernel.run(f"{SECCOMP} --name quiet#1   # a comment ends the line, as in a shell\nx = 1", check=True)
    run_id = kernel.last_run()["id"]
    assert kernel.last_run()["name"] == "quiet#1"
    log = kernel.run(f"%jx logs {run_id}   # the whole log", check=True).stdout.splitlines()
    assert log[0] == f"[jupyter-exec] run {run_id} printed nothing"
    assert log[1].startswith(f"[jupyter-exec] run {run_id} succeeded after ")


def test_a_runs_name_is_its_code_without_the_comment_beside_it():
    """README's cells carry a comment on their first line; the runs list shows the code alone."""
    from jupyter_exec.reports import run_name

    def named(code: str) -> str:
        return run_name({"code": code, "name": None})

    assert named("model = fit(df)                  # run once\nmore()") == "model = fit(df)"
    assert named("# set-up\nprint('#1 of 3')  # the first") == "print('#1 of 3')"
    assert named("rows = [  # open bracket\n  1]") == "rows = ["
    assert named('text = """# not a comment') == 'text = """# not a comment'


def test_runs_is_a_table_for_reading(kernel):
    kernel.run(f"{SECCOMP}\n# a comment first\ntotal = sum(range(10))\nprint(total)", check=True)
    plain = kernel.last_run()["id"]
    kernel.run(f"{SECCOMP}\nimport socket; socket.socket()")
    refused = kernel.last_run()["id"]
    kernel.run(
        "import jupyter_exec\nsquares = jupyter_exec.map('item * item', range(8), backend='seccomp', batch_size=2)"
    )
    assert kernel.eval("squares") == [i * i for i in range(8)]
    map_id = max(row["id"] for row in kernel.records().runs(20) if row["name"] == "map")

    table = kernel.run(
        "runs = %jx runs\nprint(list(runs.columns))\nprint(runs.to_string())\nprint(runs.index.tolist())", check=True
    ).stdout.splitlines()
    shown = ["name", "status", "backend", "started", "duration", "peak memory", "error"]
    in_session = [*shown[:3], "session", *shown[3:]]  # where a session's cell is among the runs listed
    assert table[0] in (str(shown), str(in_session)), table[0]
    mine = {str(plain), str(refused), str(map_id)}  # other tests' cells share this kernel's store
    text = "\n".join(line for line in table[1:-1] if line.split()[:1] and line.split()[0] in mine)
    assert len(text.splitlines()) == 3, table
    for nothing in ("None", "NaN", "<NA>", "nan"):
        assert nothing not in text, text
    ids = [int(i) for i in table[-1].strip("[]").split(", ")]
    assert plain in ids and refused in ids and map_id in ids
    assert not [row for row in kernel.records().runs(50) if row["id"] in ids and (row["name"] or "").startswith("map ")]
    row = kernel.run(f"print(runs.loc[{plain}].to_dict())", check=True).stdout
    assert "'name': 'total = sum(range(10))'" in row and "'status': 'succeeded'" in row
    assert re.search(r"'duration': '\d+ ms'", row) and re.search(r"'peak memory': '[\d.]+ MiB'", row), row
    error = kernel.eval(f"runs.loc[{refused}, 'error']")
    assert error.startswith("PermissionError: [Errno") and error.count("PermissionError") == 1
    assert kernel.eval(f"runs.loc[{map_id}, 'name']") == "map: item * item (4 batches)"

    every = kernel.run(
        f"every = %jx runs 5 --all\nprint(every.loc[{plain}, 'exit_code'], every.loc[{plain}, 'kernel'] != '')",
        check=True,
    )
    assert every.stdout == "0 True\n"  # an integer, not 0.0
    shown = kernel.run(f"%jx show {map_id}", check=True).stdout
    batches = re.findall(rf"run \d+ \(map {map_id}\[(\d+):(\d+)\]\) succeeded after", shown)
    assert batches == [("0", "2"), ("2", "4"), ("4", "6"), ("6", "8")], shown
    assert kernel.run(f"%jx logs {map_id}", check=True).stdout == (
        f"[jupyter-exec] run {map_id} is a map: its batches have the logs (%jx show {map_id} lists them)\n"
    )


def test_wait_shows_how_the_run_ended(kernel):
    kernel.run(f"{SECCOMP} --bg --name waited\nimport time; time.sleep(0.5)\n41 + 1", check=True)
    run_id = kernel.last_run()["id"]
    waited = kernel.run(f"%jx wait {run_id}", check=True)
    assert re.fullmatch(rf"run {run_id} \(waited\) succeeded after [\d.]+ (ms|s)\n", waited.stdout), waited
    assert waited.result_text == "42"


def test_resources_read_as_text(kernel):
    shown = kernel.run("%jx resources", check=True).stdout
    assert re.search(r"^seccomp +seccomp +available", shown, re.M), shown
    assert not re.search(r"[\[{(]'|'[\]})]", shown), shown  # no Python repr of a list or a dict


def test_full_log_of_a_silent_run_says_so(tmp_path):
    """The run panel's "Full log" button on a run that printed nothing: no endless "loading…"."""
    from jupyter_exec.config import ExecConfig
    from jupyter_exec.manager import Manager
    from jupyter_exec.widgets import RunWidget

    manager = Manager(ExecConfig(data_dir=str(tmp_path)))
    try:
        panel = RunWidget(cancel=manager.cancel, read_log=manager.log_text)
        manager.run("x = 1", RunSpec(backend="local"), sink=panel, on_event=panel.event)
        panel._on_click(panel, {"action": "full_log"}, [])
        assert panel.full_log.startswith(f"[jupyter-exec] run {panel.run_id} printed nothing\n"), panel.full_log
    finally:
        manager.shutdown()
