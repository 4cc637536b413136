"""The widgets in a real browser: JupyterLab on 127.0.0.1 with a token, a notebook made
here, cells run through the UI in Chromium (Debian's, driven by Playwright).

Screenshots go to build/screenshots/; with JX_UPDATE_DOCS=1 they also refresh the
README's pictures under docs/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import require

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BACKEND = "local"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server of our own: token, free port, private settings; stopped at the end."""
    require(shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is not None, "jupyterlab not installed")
    home = tmp_path_factory.mktemp("lab")
    # Draw every cell (no windowing) so off-screen outputs exist in the page; no news toast.
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    root = home / "notebooks"
    root.mkdir()
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JX_DATA_DIR": str(home / "jx-data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(home / "server.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("JupyterLab did not start: " + (home / "server.log").read_text()[-2000:])
            time.sleep(0.3)
    yield {"url": url, "token": token, "root": root}
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="session")
def browser():
    require(Path(CHROMIUM).exists(), "Chromium not installed (apt-get install chromium)")
    require(importlib.util.find_spec("playwright") is not None, "playwright not installed (pip install -e .[test])")
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=15_000)          # 2 shared cores: give the page time, never a fixed sleep
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


CELLS = [
    "%load_ext jupyter_exec",
    # 1: log lines while it runs, stderr marked, ends succeeded
    f"%%sandbox --backend {BACKEND} --mem 256m\nimport sys, time\nblocks = []\n"
    "for i in range(8):\n    print(f'tick {i}', flush=True)\n    blocks.append(bytearray(15 << 20))\n"
    "    until = time.time() + (0.6 if i % 2 else 0.1)\n    while time.time() < until: pass\n    time.sleep(0.3)\n"
    "print('a warning', file=sys.stderr)",
    # 2: ends timeout
    f"%%sandbox --backend {BACKEND} --timeout 2s\nimport time\nprint('started', flush=True)\ntime.sleep(60)",
    # 3: cancelled by the button while the cell is executing
    f"%%sandbox --backend {BACKEND}\nimport time\nprint('long run', flush=True)\ntime.sleep(120)",
    # 4: a background run: the cell returns, the panel keeps going, the output is bound at the end
    f"%%sandbox --bg --backend {BACKEND} --out answer\nimport time\nfor i in range(3):\n"
    "    print(f'bg {i}', flush=True)\n    time.sleep(0.7)\nanswer = 42",
    "import time\nfor _ in range(100):\n    if 'answer' in globals(): break\n    time.sleep(0.1)\nprint('answer', answer)",
    # 6: a real explore, then the tree
    "from jupyter_exec import explore\nscores = iter([0.3, 0.9, 0.5, 0.7, 0.2, 0.95, 0.4, 0.8, 0.1])\n"
    "t = explore(lambda parent: f'score = {next(scores)}\\nscore', budget=9, trace='ui', "
    f"backend='{BACKEND}')\nprint('best', t.sota().id, 'of', len(t))",
    "%jx tree ui",
    # 8: many nodes stay smooth
    "from jupyter_exec.trace import Node, Trace\nfrom jupyter_exec.widgets import TreeWidget\nbig = Trace('big')\n"
    "for i in range(1, 5001):\n    big.add(Node(i, None if i == 1 else i // 2, 'x', params={'i': i}))\n"
    "    big.finish(i, 'succeeded', {'score': (i * 7919) % 5003})\nTreeWidget(big)",
    "%jx resources",
]


def _notebook(root: Path, name: str, cells: list[str]) -> str:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
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
        expect(panel.locator(".jx-log")).to_contain_text("tick 1", timeout=30_000)
        expect(panel.locator(".jx-status")).to_have_text("running")
        expect(panel.locator(".jx-gauge")).to_have_count(2)
        done(1)
        expect(panel.locator(".jx-status")).to_have_text("succeeded", timeout=10_000)
        expect(panel.locator(".jx-stderr")).to_have_text("a warning")
        expect(panel.locator(".jx-foot")).to_contain_text("succeeded in")
        panel.locator(".jx-full-button").click()
        expect(panel.locator(".jx-full-log")).to_contain_text("tick 7\na warning")
        panel.locator(".jx-full-button").click()
        _shot(panel, "widget-run")
        # 2: timeout
        run(2)
        expect(cells.nth(2).locator(".jx-status")).to_have_text("timeout", timeout=10_000)
        expect(cells.nth(2).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
               ).to_contain_text("TaskTimeoutError")
        # 3: Cancel while the cell is executing
        run(3, wait=False)
        long_panel = cells.nth(3).locator(".jx-run")
        expect(long_panel.locator(".jx-log")).to_contain_text("long run", timeout=30_000)
        clicked = time.monotonic()
        long_panel.locator(".jx-cancel").click()
        done(3, timeout=20_000)
        assert time.monotonic() - clicked < 20
        expect(long_panel.locator(".jx-status")).to_have_text("cancelled", timeout=10_000)
        expect(cells.nth(3)).to_contain_text("TaskCancelledError")
        # 4: background: the cell is done while the panel still runs, then the value is bound
        run(4)
        bg_panel = cells.nth(4).locator(".jx-run")
        expect(bg_panel.locator(".jx-status")).to_have_text("running")
        expect(bg_panel.locator(".jx-status")).to_have_text("succeeded", timeout=30_000)
        expect(bg_panel.locator(".jx-log")).to_contain_text("bg 2")
        run(5)
        expect(cells.nth(5)).to_contain_text("answer 42")
        # 6-7: a real explore, then its tree: every node drawn, the SOTA marked
        run(6)
        expect(cells.nth(6)).to_contain_text("best", timeout=60_000)
        printed = cells.nth(6).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
        best = int(re.search(r"best (\d+) of 9", printed.inner_text()).group(1))
        expect(cells.nth(6).locator(".jx-tree-summary")).to_contain_text("9 nodes")    # followed live
        run(7)
        tree = cells.nth(7).locator(".jx-tree")
        expect(tree.locator(".jx-tree-summary")).to_contain_text("9 nodes")
        expect(tree.locator(".jx-node")).to_have_count(9)
        expect(tree.locator(".jx-node.jx-sota")).to_have_attribute("data-id", str(best))
        tree.locator(f".jx-node[data-id='{best}']").click()
        expect(tree.locator(".jx-tree-detail")).to_contain_text("score = ")
        if best != 1:                                   # navigate up: the parent's details, the parent selected
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
        panel = cells.nth(1).locator(".jx-run")
        expect(panel.locator(".jx-status")).to_have_text("timeout", timeout=10_000)
        expect(panel.locator(".jx-log")).to_contain_text("started")
    finally:
        page.screenshot(path=str(SHOTS / "notebook7.png"))
        page.close()
