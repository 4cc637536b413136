"""The widgets in a real browser: JupyterLab on 127.0.0.1 with a token, a notebook made
here, cells run through the UI in Chromium (Debian's, driven by Playwright).

Screenshots go to build/screenshots/; with JX_UPDATE_DOCS=1 they also refresh the
README's pictures under docs/.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import require

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots"
BACKEND = "local"


CELLS = [
    "%load_ext jupyter_exec",
    # 1: log lines while it runs, stderr marked, ends succeeded
    f"%%sandbox --backend {BACKEND} --mem 256m\nimport sys, time\nblocks = []\n"
    "for i in range(8):\n    print(f'tick {i}', flush=True)\n    blocks.append(bytearray(15 << 20))\n"
    "    until = time.time() + (0.6 if i % 2 else 0.1)\n    while time.time() < until: pass\n    time.sleep(0.3)\n"
    "print('a warning', file=sys.stderr)",
    # 2: ends timeout
    f"%%sandbox --backend {BACKEND} --timeout 2s\nimport time\nprint('started', flush=True)\ntime.sleep(60)",
    # 3: its full log while it has printed nothing, then cancelled by the button while the cell is executing
    f"%%sandbox --backend {BACKEND}\nimport time\ntime.sleep(3)\nprint('long run', flush=True)\ntime.sleep(120)",
    # 4: a background run: the cell returns, the panel keeps going, the output is bound at the end
    f"%%sandbox --bg --backend {BACKEND} --out answer\nimport time\nfor i in range(3):\n"
    "    print(f'bg {i}', flush=True)\n    time.sleep(0.7)\nanswer = 42",
    "import time\nfor _ in range(100):\n    if 'answer' in globals(): break\n    time.sleep(0.1)\n"
    "print('answer', answer)",
    # 6: a real explore, then the tree
    "from jupyter_exec import explore\nscores = iter([0.3, 0.9, 0.5, 0.7, 0.2, 0.95, 0.4, 0.8, 0.1])\n"
    "t = explore(lambda parent: f'score = {next(scores)}\\nscore', budget=9, trace='ui', "
    f"backend='{BACKEND}')\nprint('best', t.sota().id, 'of', len(t))",
    "%jx tree ui --live",
    # 8: many nodes stay smooth
    "from jupyter_exec.trace import Node, Trace\nfrom jupyter_exec.widgets import TreeWidget\nbig = Trace('big')\n"
    "for i in range(1, 5001):\n    big.add(Node(i, None if i == 1 else i // 2, 'x', params={'i': i}))\n"
    "    big.finish(i, 'succeeded', {'score': (i * 7919) % 5003})\nTreeWidget(big, live=True)",
    "%jx resources",
    # 10: a run over before its first full sample: the memory gauge shows its peak, not "-"
    "from jupyter_exec.widgets import RunWidget\nw = RunWidget()\n"
    "w.event({'kind': 'created', 'run_id': 99, 'backend': 'container', 'isolation': 'container', "
    "'limits': {'memory': 256 << 20}, 'log_path': '', 'name': 'short'})\n"
    "w.event({'kind': 'sample', 't': 0.1, 'memory': None})\n"
    "w.event({'kind': 'finished', 'status': 'succeeded', 'error': None, 'peak_memory': 50 << 20, "
    "'cpu_seconds': 0.1, 'duration': 0.2, 'timeline': {'marks': [['queued', 0.0], ['admitted', 0.001], "
    "['sandbox_ready', 0.051], ['started', 0.052], ['first_output', 0.15], ['ended', 0.2], ['decoded', 0.2005]], "
    "'notes': {'sandbox_ready': 'pool'}}})\nw",
]


def _notebook(root: Path, name: str, cells: list[str]) -> str:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
    )
    nbformat.write(notebook, root / name)
    return name


def _runner(page, cells):
    """run(i): run cell i with Ctrl+Enter (and wait for it); done(i): wait for its execution count."""
    from playwright.sync_api import expect

    def done(index: int, timeout: float = 60_000) -> None:
        expect(cells.nth(index).locator(".jp-InputPrompt")).to_contain_text(re.compile(r"\[\d+\]"), timeout=timeout)

    def run(index: int, wait: bool = True) -> None:
        prompt = cells.nth(index).locator(".jp-InputPrompt")
        for _ in range(4):
            cells.nth(index).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            # A key pressed before the kernel has connected is dropped; the prompt then stays
            # "[ ]:". Press again until the cell is queued or running ("[*]") or done ("[n]").
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and prompt.inner_text().strip() in ("[ ]:", ""):
                page.wait_for_timeout(100)
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                break
        if wait:
            done(index)

    return run, done


def _workspace(page, lab, workspace: str, name: str, count: int):
    """Notebook ``name`` open in a workspace of its own (no notebook of another test restored
    beside it, no layout left behind), its ``count`` cells drawn and its kernel idle."""
    from playwright.sync_api import expect

    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?token={lab['token']}")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    expect(cells).to_have_count(count, timeout=60_000)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
    return cells


def _command(page, label: str) -> None:
    """Run the command ``label`` from the command palette, as a person does (Ctrl+Shift+C). A
    page just drawn may not yet hear the shortcut (its focus elsewhere): pressed again then."""
    from playwright.sync_api import expect

    palette = page.locator(".lm-CommandPalette-input")
    for _ in range(5):
        page.keyboard.press("Control+Shift+C")
        try:
            expect(palette).to_be_visible(timeout=3_000)
            break
        except AssertionError:
            page.locator("#jp-main-statusbar").click()  # the application's focus
    palette.fill(label)
    page.keyboard.press("Enter")


def _save_restart_reload(page, count: int):
    """Save the notebook, restart its kernel, reload the page (what a person finds on coming
    back to it); the reloaded page's ``count`` code cells."""
    from playwright.sync_api import expect

    page.keyboard.press("Control+s")
    expect(page.locator(".jp-mod-dirty")).to_have_count(0)
    page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
    page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").click()
    page.locator(".jp-Dialog-button.jp-mod-accept").click()
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
    page.reload()
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    expect(cells).to_have_count(count, timeout=60_000)
    return cells


def _shut_down(page) -> None:
    """Close the notebook and shut its kernel down: a test leaves no kernel behind."""
    from playwright.sync_api import expect

    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    page.locator(".lm-Menu-itemLabel", has_text="Close and Shut Down Notebook").click()
    page.locator(".jp-Dialog-button.jp-mod-accept").click()
    expect(page.locator(".jp-Notebook")).to_have_count(0)


def _widget_outputs(notebook) -> list:
    """The outputs of a saved notebook that need a widget's model (which a reopened notebook lacks)."""
    return [
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]


def _nbconvert_html(path: Path) -> str:
    """``jupyter nbconvert --to html`` of ``path``: what a static renderer shows of it."""
    done = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--stdout", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _shot(locator, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=str(SHOTS / f"{name}.png"))
    if os.environ.get("JX_UPDATE_DOCS") == "1":
        shutil.copy(SHOTS / f"{name}.png", ROOT / "docs" / f"{name}.png")


def test_widgets_in_jupyterlab(lab, browser):
    from playwright.sync_api import expect

    name = _notebook(lab["root"], "widgets.ipynb", CELLS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    expect(cells).to_have_count(len(CELLS), timeout=60_000)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)

    run, done = _runner(page, cells)
    try:
        run(0)
        # 1: lines appear while the run is going; it ends succeeded
        run(1, wait=False)
        panel = cells.nth(1).locator(".jx-run")
        expect(panel.locator(".jx-log")).to_contain_text("tick 3", timeout=30_000)
        expect(panel.locator(".jx-status")).to_have_text("running")
        expect(panel.locator(".jx-gauge")).to_have_count(2)
        expect(panel.locator(".jx-backend")).to_have_text("local (subprocess)")
        _shot(panel, "widget-run")
        done(1)
        # over: the panel has become its transcript, which needs no kernel and no widget
        transcript = cells.nth(1).locator(".jx-transcript")
        expect(transcript.locator(".jx-transcript-foot")).to_contain_text("succeeded after", timeout=10_000)
        expect(transcript.locator(".jx-transcript-foot")).to_contain_text("peak memory")
        expect(transcript.locator(".jx-transcript-log")).to_contain_text("tick 7\na warning")
        # where its time went: a thin bar of its phases above their one-line breakdown
        expect(transcript.locator(".jx-transcript-timeline")).to_contain_text(re.compile(r"timeline [\d.]+ s: admit "))
        expect(transcript.locator(".jx-transcript-timeline")).to_contain_text("first output")
        assert transcript.locator(".jx-transcript-timeline span[title^='sandbox ']").count() == 1
        expect(cells.nth(1).locator(".jx-run")).to_have_count(0)
        _shot(transcript, "run-transcript")
        # 2: timeout
        run(2)
        expect(cells.nth(2).locator(".jx-transcript-foot")).to_contain_text("timeout after", timeout=10_000)
        expect(
            cells.nth(2).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        ).to_contain_text("TaskTimeoutError")
        # 3: the full log of a run that has printed nothing yet says so; the tail comes back;
        # then Cancel while the cell is executing
        run(3, wait=False)
        long_panel = cells.nth(3).locator(".jx-run")
        expect(long_panel.locator(".jx-status")).to_have_text("running", timeout=30_000)
        long_panel.locator(".jx-full-button").click()
        expect(long_panel.locator(".jx-log")).to_contain_text(re.compile(r"run \d+ has printed nothing"))
        long_panel.locator(".jx-full-button").click()  # back to the tail
        expect(long_panel.locator(".jx-log")).to_have_text("long run", timeout=30_000)
        long_panel.locator(".jx-full-button").click()
        expect(long_panel.locator(".jx-log")).to_have_text("long run\n")  # in its place, not a second copy
        expect(long_panel.locator("pre")).to_have_count(1)
        clicked = time.monotonic()
        long_panel.locator(".jx-cancel").click()
        done(3, timeout=20_000)
        assert time.monotonic() - clicked < 20
        expect(cells.nth(3).locator(".jx-transcript-foot")).to_contain_text("cancelled after", timeout=10_000)
        expect(cells.nth(3)).to_contain_text("TaskCancelledError")
        # 4: background: the cell is done while the panel still runs, then the value is bound
        run(4)
        bg_panel = cells.nth(4).locator(".jx-run")
        expect(bg_panel.locator(".jx-status")).to_have_text("running")
        expect(bg_panel.locator(".jx-foot")).to_contain_text("in the background: %jx wait")
        bg_transcript = cells.nth(4).locator(".jx-transcript")
        expect(bg_transcript.locator(".jx-transcript-foot")).to_contain_text("succeeded after", timeout=30_000)
        expect(bg_transcript.locator(".jx-transcript-log")).to_contain_text("bg 2")
        expect(cells.nth(4).locator(".jp-OutputArea-output")).to_have_count(1)  # no stale "<run N running…>"
        run(5)
        expect(cells.nth(5)).to_contain_text("answer 42")
        # 6-7: a real explore, then its tree: every node drawn, the SOTA marked
        run(6)
        expect(cells.nth(6)).to_contain_text("best", timeout=60_000)
        printed = cells.nth(6).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
        best = int(re.search(r"best (\d+) of 9", printed.inner_text()).group(1))
        # followed live; at the cell's end the widget became the static tree
        expect(cells.nth(6).locator(".jx-tree-static-head")).to_contain_text("9 nodes")
        expect(cells.nth(6).locator(".jx-tree")).to_have_count(0)
        run(7)
        tree = cells.nth(7).locator(".jx-tree")
        expect(tree.locator(".jx-tree-summary")).to_contain_text("9 nodes")
        expect(tree.locator(".jx-node")).to_have_count(9)
        expect(tree.locator(".jx-node.jx-sota")).to_have_attribute("data-id", str(best))
        tree.locator(f".jx-node[data-id='{best}']").click()
        expect(tree.locator(".jx-tree-detail")).to_contain_text("score = ")
        if best != 1:  # navigate up: the parent's details, the parent selected
            tree.locator(".jx-parent").click()
            expect(tree.locator(".jx-node.jx-selected")).not_to_have_attribute("data-id", str(best))
            expect(tree.locator(".jx-tree-detail .jx-detail-title")).not_to_contain_text(f"#{best} ")
        tree.locator(".jx-to-sota").click()
        expect(tree.locator(".jx-node.jx-selected")).to_have_attribute("data-id", str(best))
        _shot(tree, "widget-tree")
        # 8: 5,000 nodes: only the rows in view are in the page, scrolling stays quick
        run(8)
        big = cells.nth(8).locator(".jx-tree")
        expect(big.locator(".jx-tree-summary")).to_contain_text("5000 nodes")
        assert big.locator(".jx-node").count() < 80
        started = time.monotonic()
        big.locator(".jx-expand-all").click()
        big.locator(".jx-tree-viewport").evaluate("v => { v.scrollTop = v.scrollHeight; }")
        expect(big.locator(".jx-node").last).to_be_visible()
        assert time.monotonic() - started < 3
        # 9: resources
        run(9)
        cards = cells.nth(9).locator(".jx-card")
        expect(cards.first).to_be_visible(timeout=30_000)
        assert cards.count() >= 3
        _shot(cells.nth(9).locator(".jx-resources"), "widget-resources")
        # 10: a short run's gauges
        run(10)
        short = cells.nth(10).locator(".jx-run")
        expect(short.locator(".jx-gauge-value").nth(1)).to_have_text("peak 50.0 MiB / 256.0 MiB")
        expect(short.locator(".jx-backend")).to_have_text("container")  # not "container (container)"
        expect(short.locator(".jx-foot")).to_have_text("succeeded after 200 ms · peak memory 50.0 MiB of 256.0 MiB")
        expect(short.locator(".jx-timeline-line")).to_have_text(
            "timeline 200.5 ms: admit 1.0 ms · sandbox 50.0 ms (pool) · start 1.0 ms · first output 98.0 ms · "
            "run 50.0 ms · decode 0.5 ms"
        )
        parts = short.locator(".jx-timeline-part")
        expect(parts).to_have_count(6)
        widths = [parts.nth(i).bounding_box()["width"] for i in range(6)]
        assert widths[3] > widths[1] > widths[0], widths  # first output (98 ms) > sandbox (50 ms) > admit (1 ms)
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "notebook.png"), full_page=True)
        page.close()


def test_run_panel_in_notebook_7(lab, browser):
    """The same panel in Notebook 7 (served by the same server when the notebook package is installed)."""
    from playwright.sync_api import expect

    require(importlib.util.find_spec("notebook") is not None, "notebook 7 not installed (pip install -e .[test])")
    name = _notebook(lab["root"], "nb7.ipynb", [CELLS[0], CELLS[2]])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto(f"{lab['url']}/notebooks/{name}?token={lab['token']}")
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(2, timeout=60_000)
        run, _ = _runner(page, cells)
        run(0)
        run(1)
        transcript = cells.nth(1).locator(".jx-transcript")
        expect(transcript.locator(".jx-transcript-foot")).to_contain_text("timeout after", timeout=10_000)
        expect(transcript.locator(".jx-transcript-log")).to_contain_text("started")
    finally:
        page.screenshot(path=str(SHOTS / "notebook7.png"))
        page.close()


def test_side_panel_follows_and_cancels_a_run(lab, browser):
    """The side panel: a kernel's run appears running, its log arrives live, Cancel stops it
    (the cell shows the cancellation), and a trace node leads back to its run."""
    from playwright.sync_api import expect

    name = _notebook(
        lab["root"],
        "panel.ipynb",
        [
            "%load_ext jupyter_exec",
            # each a new best, so each the next one's parent (--parent latest): a chain of three
            "%%sandbox --backend seccomp --trace panel-tree\n{'score': 0.25}",
            "%%sandbox --backend seccomp --trace panel-tree\n{'score': 0.5}",
            "%%sandbox --backend seccomp --trace panel-tree\n{'score': 0.75}",
            "%jx tree panel-tree --live",  # the tree widget's stylesheet in the page, beside the side panel's
            "%%sandbox --backend seccomp --name panel-demo\nimport time\nprint('hello from the sandbox', flush=True)\n"
            "time.sleep(60)",
        ],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        cells = _workspace(page, lab, "side-panel", name, 6)
        run, done = _runner(page, cells)
        for index in range(5):
            run(index)
        expect(cells.nth(4).locator(".jx-tree .jx-node")).to_have_count(3)
        run(5, wait=False)
        _command(page, "jupyter-exec: Show runs")
        panel = page.locator("#jupyter-exec-panel")
        expect(panel).to_be_visible()
        row = panel.locator(".jx-row", has_text="panel-demo")
        expect(row.locator(".jx-badge")).to_have_text("running", timeout=30_000)
        row.click()
        expect(panel.locator(".jx-log")).to_contain_text("hello from the sandbox", timeout=15_000)
        expect(panel.locator(".jx-info")).to_contain_text("seccomp")
        expect(panel.locator(".jx-RunsView th", has_text="backend")).to_be_hidden()  # narrow: fewer columns
        handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first  # widen the side bar
        box = handle.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 300)
        page.mouse.down()
        page.mouse.move(box["x"] + 260, box["y"] + 300, steps=5)
        page.mouse.up()
        expect(panel.locator(".jx-RunsView th", has_text="backend")).to_be_visible()
        _shot(page.locator("#jp-main-content-panel"), "side-panel")
        clicked = time.monotonic()
        panel.locator(".jx-cancel").click()
        expect(row.locator(".jx-badge")).to_have_text("cancelled", timeout=15_000)
        expect(panel.locator(".jx-info .jx-badge")).to_have_text("cancelled")
        expect(panel.locator(".jx-info .jx-timeline-line")).to_contain_text(re.compile(r"admit .* · sandbox .* · run "))
        assert panel.locator(".jx-info .jx-timeline-part").count() >= 5
        done(5, timeout=20_000)
        assert time.monotonic() - clicked < 20
        expect(
            cells.nth(5).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        ).to_contain_text("TaskCancelledError")
        # the envs tab answers; the trees tab shows the trace, and its node opens its run
        panel.locator(".lm-TabBar-tab", has_text="Envs").click()
        expect(panel.locator(".jx-EnvsView .jx-table")).to_be_visible()
        panel.locator(".lm-TabBar-tab", has_text="Trees").click()
        trees = panel.locator(".jx-TreesView")
        trees.locator(".jx-filter").select_option("panel-tree")
        # a chain of three nodes: each on its own row, indented one step more than its parent
        nodes = trees.locator(".jx-node")
        expect(nodes).to_have_count(3)
        boxes = [nodes.nth(i).bounding_box() for i in range(3)]
        assert all(a["y"] + a["height"] <= b["y"] for a, b in itertools.pairwise(boxes)), boxes
        lefts = [nodes.nth(i).locator(".jx-node-id").bounding_box()["x"] for i in range(3)]
        assert lefts[0] < lefts[1] < lefts[2], lefts
        _shot(trees, "side-panel-trees")
        node = trees.locator(".jx-node.jx-sota")
        expect(node).to_contain_text("score=0.75")
        node.click()
        expect(panel.locator(".jx-RunsView")).to_be_visible()
        expect(panel.locator(".jx-code")).to_contain_text("0.75")
        expect(panel.locator(".jx-problem")).to_have_count(3)
        for problem in panel.locator(".jx-problem").all():
            expect(problem).to_be_empty()
        # the panel polls while it is shown, and stops once it is closed
        calls: list[str] = []
        page.on("request", lambda request: calls.append(request.url) if "/jupyter-exec/api/" in request.url else None)
        page.wait_for_timeout(2000)
        assert calls, "the panel did not poll while shown"
        page.locator(".jp-SideBar .lm-TabBar-tab[data-id='jupyter-exec-panel']").click()
        expect(panel).to_be_hidden()
        page.wait_for_timeout(500)  # a request already on its way
        before = len(calls)
        page.wait_for_timeout(3000)
        assert len(calls) == before, f"the hidden panel still polls: {calls[before:]}"
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "side-panel-page.png"))
        page.close()


def test_a_host_list_runs_connections_in_the_cell_and_the_side_panel(lab, browser, network_lab):
    """A ``--network HOST,...`` run: the run panel's network line once it ends, and each connection
    with its verdict in the side panel's details."""
    from playwright.sync_api import expect

    name = _notebook(
        lab["root"],
        "network.ipynb",
        [
            "%load_ext jupyter_exec",
            f"import os\nos.environ.update({network_lab.env()!r})  # the proxy in this kernel resolves the lab's names",
            "%%sandbox --backend seccomp --network files.test --name net-demo\nimport urllib.request\n"
            "for url in ('http://files.test/index.txt', 'http://other.test/'):\n"
            "    try:\n        print(urllib.request.urlopen(url).read())\n"
            "    except Exception as error:\n        print(error)",
        ],
    )
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        cells = _workspace(page, lab, "network", name, 3)
        run, _ = _runner(page, cells)
        for index in range(3):
            run(index)
        # once it ends the panel is its transcript: the limits in its head, the connections in its foot
        widget = cells.nth(2).locator(".jx-transcript")
        expect(widget.locator(".jx-transcript-foot")).to_contain_text("succeeded after", timeout=30_000)
        expect(widget.locator(".jx-transcript-head")).to_contain_text("network files.test")
        line = widget.locator(".jx-transcript-foot")
        expect(line).to_contain_text("network files.test: 2 connections, 1 refused (other.test:80)")
        _shot(widget, "run-panel-network")
        _command(page, "jupyter-exec: Show runs")
        panel = page.locator("#jupyter-exec-panel")
        panel.locator(".jx-row", has_text="net-demo").click()
        info = panel.locator(".jx-info")
        expect(info.locator(".jx-network")).to_contain_text("files.test: 2 connections, 1 refused")
        expect(info.locator(".jx-connection-allowed")).to_contain_text("allowed files.test:80")
        expect(info.locator(".jx-connection-refused")).to_contain_text(
            "refused other.test:80 · other.test:80 is not on this run's --network list (files.test)"
        )
    finally:
        page.screenshot(path=str(SHOTS / "network.png"))
        page.close()


SAVED_CELLS = [
    "%load_ext jupyter_exec",
    # on the default backend (auto: the container where Docker runs), with widgets
    "%%sandbox --mem 256m\nimport sys\nfor i in range(3):\n    print(f'line {i}', flush=True)\n"
    "print('to stderr', file=sys.stderr)",
    "%%sandbox\nprint('before the error', flush=True)\nraise ValueError('the error itself')",
    "%%sandbox\nclass Shown:\n    def _repr_html_(self):\n        return '<b class=\"shown\">a display</b>'\n"
    "display(Shown())\nprint('after the display')",
    "%%sandbox --bg\nimport time\nfor i in range(3):\n    print(f'bg line {i}', flush=True)\n    time.sleep(0.5)",
    "%%sandbox\nfor i in range(3000):\n    print('long', i)",
    "import time\ntime.sleep(3)\nprint('waited')",
]

#: cell -> what must still be read there after a restart, in nbconvert's HTML and in the file
KEPT = {
    1: ["line 0", "line 2", "to stderr", "succeeded after"],
    2: ["before the error", "the error itself", "failed after"],
    3: ["after the display", "a display", "succeeded after"],
    4: ["bg line 2", "succeeded after"],
    5: ["long 0", "long 19", "lines not kept here: %jx logs", "long 2999", "succeeded after"],
}


def test_a_saved_notebook_keeps_its_output(lab, browser, tmp_path):
    """Run a notebook of sandbox cells, save it, restart the kernel, reload the page: every
    cell still shows what it printed, its error and its status line; so do nbconvert's HTML
    of the saved file (with and without widget state) and the file read as text."""
    from playwright.sync_api import expect

    name = _notebook(lab["root"], "saved.ipynb", SAVED_CELLS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{lab['url']}/lab/workspaces/saved/tree/{name}?token={lab['token']}")
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(len(SAVED_CELLS), timeout=60_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        run, _ = _runner(page, cells)
        for index in range(len(SAVED_CELLS)):
            run(index)
        for index, texts in KEPT.items():
            for text in texts:
                expect(cells.nth(index)).to_contain_text(text, timeout=30_000)
        cells = _save_restart_reload(page, len(SAVED_CELLS))
        for index, texts in KEPT.items():
            for text in texts:
                expect(cells.nth(index)).to_contain_text(text)
        expect(cells.nth(3).locator("b.shown")).to_have_text("a display")
        expect(page.locator(".jp-Notebook")).not_to_contain_text("Error displaying widget")
        _shot(page.locator(".jp-Notebook"), "notebook-reopened")
        _shut_down(page)
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "saved-notebook.png"), full_page=True)
        page.close()

    saved = lab["root"] / name
    raw = saved.read_text()
    notebook = nbformat.reads(raw, as_version=4)
    assert not _widget_outputs(notebook)
    with_state = tmp_path / "with-state.ipynb"
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}
    }
    nbformat.write(notebook, with_state)
    for source in (saved, with_state):
        page_html = _nbconvert_html(source)
        for texts in KEPT.values():
            for text in texts:
                assert text in page_html, (source.name, text)
    for texts in KEPT.values():  # the .ipynb read as text
        for text in texts:
            assert text in raw, text
