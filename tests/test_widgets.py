"""Widget state, driven by real runs: the panel as a run's sink and event callback, the
tree from a real trace, the resources report, background runs, and — in a real kernel —
the Cancel click handled while the cell is still executing."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import Kernel, require

from jupyter_exec.background import BackgroundRuns
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import TaskCancelledError, TaskTimeoutError
from jupyter_exec.events import Finished, Running
from jupyter_exec.manager import Manager
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.status import Status
from jupyter_exec.trace.model import Node, Trace
from jupyter_exec.widgets import ResourcesWidget, RunWidget, TreeWidget

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BACKEND = "local"


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    return Manager(ExecConfig(data_dir=str(tmp_path_factory.mktemp("jx-widgets"))))


def watched_run(manager: Manager, code: str, **limits) -> tuple[RunWidget, BaseException | None]:
    panel = RunWidget(cancel=manager.cancel, read_log=manager.log_text)
    error = None
    try:
        manager.run(code, RunSpec(backend=BACKEND, limits=Limits.parse(**limits)), sink=panel, on_event=panel.event)
    except BaseException as caught:  # the test asserts on it
        error = caught
    return panel, error


def test_run_panel_follows_a_run(manager):
    code = (
        "import sys, time\nblock = bytearray(60 << 20)\n"
        "for i in range(3):\n    print('line', i, flush=True); time.sleep(0.5)\n"
        "print('careful', file=sys.stderr)\nwhile time.process_time() < 0.5: pass\n"
    )
    panel, error = watched_run(manager, code, memory="512m")
    assert error is None
    assert panel.status == "succeeded" and panel.run_id > 0 and panel.duration > 1
    assert panel.log == [["stdout", "line 0"], ["stdout", "line 1"], ["stdout", "line 2"], ["stderr", "careful"]]
    assert panel.limits["memory"] == 512 << 20 and panel.backend.startswith(BACKEND)
    assert panel.samples and max(s["memory"] for s in panel.samples) > 60 << 20
    assert panel.peak_memory >= 60 << 20
    assert manager.records.get(panel.run_id)["peak_memory"] == panel.peak_memory
    data, _ = panel._repr_mimebundle_()
    assert WIDGET_VIEW in data and "succeeded" in data["text/plain"] and "! careful" in data["text/plain"]
    assert '<span style="color:#b00">careful</span>' in data["text/html"]


def test_run_panel_samples_a_docker_run(manager):
    from jupyter_exec.backends.container import ContainerBackend

    availability = ContainerBackend.availability()
    require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    panel = RunWidget()
    code = "import time\nblock = bytearray(50 << 20)\nstart = time.time()\nwhile time.time() - start < 3: pass"
    manager.run(code, RunSpec(backend="docker", limits=Limits.parse(memory="256m")), sink=panel, on_event=panel.event)
    assert panel.status == "succeeded" and panel.backend.startswith("container")
    assert max(s["memory"] for s in panel.samples) > 50 << 20
    assert max(s.get("cpu", 0) for s in panel.samples) > 50


def test_run_panel_batches_fast_output_and_keeps_a_tail(manager):
    panel = RunWidget(cancel=manager.cancel, read_log=manager.log_text, tail=50)
    updates = []
    panel.observe(lambda change: updates.append(len(change["new"])), names="log")
    manager.run("for i in range(20000): print(i)", RunSpec(backend=BACKEND), sink=panel, on_event=panel.event)
    assert panel.log_lines == 20000 and len(panel.log) == 50 and panel.log[-1] == ["stdout", "19999"]
    assert len(updates) < 30, f"{len(updates)} log updates for one fast run"
    panel._on_click(panel, {"action": "full_log"}, [])
    assert panel.full_log.splitlines()[-1] == "19999"


def test_timeout_shows_as_timeout(manager):
    panel, error = watched_run(manager, "import time; print('start', flush=True); time.sleep(30)", timeout="1s")
    assert isinstance(error, TaskTimeoutError)
    assert panel.status == "timeout" and panel.log == [["stdout", "start"]] and panel.duration < 10


def test_cancel_click_stops_the_run(manager):
    panel = RunWidget(cancel=manager.cancel, read_log=manager.log_text)
    threading.Timer(1.0, panel._on_click, (panel, {"action": "cancel"}, [])).start()
    started = time.monotonic()
    with pytest.raises(TaskCancelledError):
        manager.run("import time; time.sleep(60)", RunSpec(backend=BACKEND), sink=panel, on_event=panel.event)
    assert time.monotonic() - started < 10
    assert panel.status == "cancelled" and manager.records.get(panel.run_id)["status"] == "cancelled"


def test_a_run_that_ends_while_its_cancel_is_asked_shows_its_final_status():
    """The run ends (cancelled) before the click's handler is done with it: the panel keeps
    the final status, never the "cancelling" the click would show."""

    def cancel_and_end_at_once(run_id: int) -> bool:
        panel.event(
            Finished(
                kind="finished", status=Status.CANCELLED, error=None, peak_memory=None, cpu_seconds=None, duration=1.0
            )
        )
        return True

    panel = RunWidget(cancel=cancel_and_end_at_once)
    panel.event(Running(kind="running", started=time.time()))
    panel._on_click(panel, {"action": "cancel"}, [])
    assert panel.status == "cancelled"


def test_background_run_returns_at_once_and_binds_at_the_end(manager):
    bound = {}
    run = BackgroundRuns(manager).start(
        "import time; time.sleep(1.5); x = 42",
        RunSpec(backend=BACKEND, outputs=("x",)),
        bind=lambda result: bound.update(result.outputs),
    )
    assert not run.done() and not bound  # back while the run sleeps
    with pytest.raises(TimeoutError, match="still running"):
        run.wait(0.1)
    assert run.wait(30).outputs == {"x": 42} and bound == {"x": 42}


def grown_trace(size: int) -> Trace:
    trace = Trace("sweep", "score", maximize=True)
    for node_id in range(1, size + 1):
        parent = None if node_id == 1 else node_id // 2
        trace.add(Node(node_id, parent, f"score = {node_id % 97}", params={"lr": node_id / 1000}))
        status = "failed" if node_id % 10 == 0 else "succeeded"
        trace.finish(node_id, status, {"score": float(node_id % 97)} if status == "succeeded" else {})
    return trace


def test_tree_widget_sends_compact_columns_and_details():
    trace = grown_trace(12)
    read = []
    tree = TreeWidget(trace, read_log=lambda run_id: read.append(run_id) or "a\nb\nlast")
    assert tree.columns["id"] == list(range(1, 13)) and tree.columns["parent"][:3] == [-1, 1, 1]
    assert tree.columns["status"][9] == "failed" and tree.columns["value"][9] is None
    assert tree.sota == trace.sota().id == 12
    trace.nodes[11].run_id = 5
    tree.selected = 11
    assert tree.detail["code"] == "score = 11" and tree.detail["params"] == {"lr": 0.011}
    assert tree.detail["metrics"] == {"score": 11.0} and tree.detail["log"].endswith("last") and read == [5]
    trace.add(Node(13, 6, "score = 96"))
    trace.finish(13, "succeeded", {"score": 96.0})
    tree.refresh()
    assert len(tree.columns["id"]) == 13 and tree.sota == 13
    assert "★ SOTA" in tree._repr_mimebundle_()[0]["text/plain"]


def test_tree_widget_payload_stays_small_at_5000_nodes():
    """Small, and made in time linear in the nodes: 5000 take at most 30 times what 500 take now
    (10 times, give or take the machine's load; a quadratic one, 100)."""
    started = time.monotonic()
    TreeWidget(grown_trace(500))
    base = time.monotonic() - started
    started = time.monotonic()
    tree = TreeWidget(grown_trace(5000))
    assert time.monotonic() - started < 30 * base, (time.monotonic() - started, base)
    assert len(json.dumps(tree.columns)) < 400_000


def test_resources_widget_reports_each_backend(manager):
    from jupyter_exec.resources import resources_report

    widget = ResourcesWidget(backends=resources_report(manager))
    local = next(b for b in widget.backends if b["name"] == "local")
    assert local["ok"] and local["resources"]["cpus"] >= 1
    assert "local" in widget.text_fallback() and "cpus:" in widget.text_fallback()


# -- in a real kernel ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widget_kernel(tmp_path_factory):
    """A kernel told to show widgets although no browser is attached (JX_WIDGETS=on)."""
    k = Kernel(tmp_path_factory.mktemp("jx-wdata"), tmp_path_factory.mktemp("jx-wnb"), env={"JX_WIDGETS": "on"})
    yield k
    k.shutdown()


@pytest.mark.kernel
def test_cancel_message_is_handled_while_the_cell_is_busy(widget_kernel):
    """The frontend's Cancel reaches the kernel while the cell waits (ipykernel 7 subshell)."""
    client = widget_kernel.client
    msg_id = client.execute(f"%%sandbox --backend {BACKEND}\nimport time\nprint('working', flush=True)\ntime.sleep(60)")
    sent = []

    def cancel_once_shown(msg: dict) -> None:
        data = msg["content"].get("data", {})
        if msg["msg_type"] == "display_data" and WIDGET_VIEW in data and not sent:
            comm_id = data[WIDGET_VIEW]["model_id"]
            time.sleep(1.0)  # the run is going and the cell is busy waiting for it
            client.shell_channel.send(
                client.session.msg(
                    "comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": {"action": "cancel"}}}
                )
            )
            sent.append(time.monotonic())

    messages = []
    for msg in widget_kernel.messages(msg_id, 30):
        cancel_once_shown(msg)
        messages.append(msg)
    assert sent and time.monotonic() - sent[0] < 15
    errors = [m["content"]["ename"] for m in messages if m["msg_type"] == "error"]
    assert errors == ["TaskCancelledError"]
    assert widget_kernel.last_run()["status"] == "cancelled"
    final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]
    assert final["text/plain"].startswith(f"run {widget_kernel.last_run()['id']} · cancelled")


@pytest.mark.kernel
def test_background_cell_returns_at_once_and_wait_gives_the_result(widget_kernel):
    cell = widget_kernel.run(
        f"%%sandbox --bg --backend {BACKEND} --out y\nimport time\ntime.sleep(2)\ny = 7\ny * 6", check=True
    )
    returned = time.time()
    assert "%jx wait" in cell.result_text
    run_id = widget_kernel.last_run()["id"]
    assert widget_kernel.eval("'y' in globals()") is False
    waited = widget_kernel.run(f"%jx wait {run_id}", check=True)
    assert waited.result_text == "42" and widget_kernel.eval("y") == 7
    assert returned < widget_kernel.records().get(run_id)["ended"]  # the cell was back before its run ended


@pytest.mark.kernel
def test_plain_text_without_a_widget_frontend(kernel):
    """The session kernel has no frontend (JX_WIDGETS=auto): output streams, resources print as text."""
    cell = kernel.run(f"%%sandbox --backend {BACKEND}\nprint('plain')", check=True)
    assert cell.stdout == "plain\n" and not any(WIDGET_VIEW in d for d in cell.displays)
    assert "seccomp" in kernel.run("%jx resources", check=True).stdout


@pytest.mark.kernel
def test_cancel_command_stops_a_background_run(widget_kernel):
    widget_kernel.run(f"%%sandbox --bg --backend {BACKEND}\nimport time\ntime.sleep(60)", check=True)
    run_id = widget_kernel.last_run()["id"]
    assert "cancelled" in widget_kernel.run(f"%jx cancel {run_id}", check=True).stdout
    waited = widget_kernel.run(f"%jx wait {run_id} 20")
    assert waited.error["ename"] == "TaskCancelledError"
    assert widget_kernel.last_run()["status"] == "cancelled"


def test_terminal_ipython_gets_plain_text(tmp_path, monkeypatch):
    """No kernel, no widgets: output streams as text and %jx resources prints a table."""
    import subprocess
    import sys

    monkeypatch.setenv("JX_DATA_DIR", str(tmp_path))
    script = (
        "from IPython.terminal.interactiveshell import TerminalInteractiveShell\n"
        "shell = TerminalInteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'jupyter_exec')\n"
        f"shell.run_cell_magic('sandbox', '--backend {BACKEND}', \"print('from the sandbox')\")\n"
        "shell.run_line_magic('jx', 'resources')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "from the sandbox" in done.stdout, done.stderr
    assert "local" in done.stdout and "cpus:" in done.stdout
