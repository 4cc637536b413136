"""The experiment tree outlives its kernel, in real Chromium: a notebook that grows a tree with
``explore`` and shows it with ``%jx tree`` is saved, its kernel restarted and the page reloaded;
the tree's nodes are still read there (no "model not found"), and in nbconvert's HTML and text."""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest
from test_browser import SHOTS, _notebook, _runner, _shot, _workspace

pytestmark = pytest.mark.browser

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

TREE_CELLS = [
    "%load_ext jupyter_exec",
    # explore grows the tree live in its cell (the process sandbox: quick, no engine needed)
    "from jupyter_exec import explore\nscores = iter([0.3, 0.9, 0.5, 0.7, 0.2])\n"
    "t = explore(lambda parent: f'score = {next(scores)}\\nscore', budget=5, trace='kept', backend='local')\n"
    "print('best', t.sota().id, 'of', len(t))",
    "%jx tree kept",
]


def test_the_tree_outlives_its_kernel(lab, browser, tmp_path):
    from playwright.sync_api import expect

    name = _notebook(lab["root"], "tree-kept.ipynb", TREE_CELLS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        cells = _workspace(page, lab, "tree-kept", name, len(TREE_CELLS))
        run, _ = _runner(page, cells)
        for index in range(len(TREE_CELLS)):
            run(index)
        printed = cells.nth(1).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']")
        expect(printed).to_contain_text("best", timeout=60_000)
        best = re.search(r"best (\d+) of 5", printed.inner_text()).group(1)
        for index in (1, 2):  # the followed tree and %jx tree, each its static form once its cell ended
            tree = cells.nth(index).locator(".jx-tree-static")
            expect(tree.locator(".jx-tree-static-head")).to_contain_text(f"5 nodes · best #{best} score=")
            expect(tree.locator(".jx-tree-static-node")).to_have_count(5)
        page.keyboard.press("Control+s")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0)
        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
        page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").click()
        page.locator(".jp-Dialog-button.jp-mod-accept").click()
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        page.reload()
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(len(TREE_CELLS), timeout=60_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        tree = cells.nth(2).locator(".jx-tree-static")
        expect(tree.locator(".jx-tree-static-node")).to_have_count(5)
        expect(tree.locator(f".jx-tree-static-node[data-id='{best}']")).to_contain_text("★ SOTA")
        expect(tree.locator(".jx-tree-static-path")).to_contain_text(f"#{best}")
        for gone in ("model not found", "Error displaying widget", "Loading widget"):
            expect(page.locator(".jp-Notebook")).not_to_contain_text(gone)
        _shot(tree, "tree-reopened")
        page.locator(".lm-MenuBar-itemLabel", has_text="File").click()  # leave no kernel behind
        page.locator(".lm-Menu-itemLabel", has_text="Close and Shut Down Notebook").click()
        page.locator(".jp-Dialog-button.jp-mod-accept").click()
        expect(page.locator(".jp-Notebook")).to_have_count(0)
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "tree-notebook.png"), full_page=True)
        page.close()

    saved = lab["root"] / name
    notebook = nbformat.read(saved, as_version=4)
    assert not [o for c in notebook.cells for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    plain = [o["data"]["text/plain"] for o in notebook.cells[2].outputs if "data" in o]
    assert plain and plain[0].startswith(f"trace 'kept': maximise score, 5 nodes, best #{best}")  # a text view
    done = subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", "--stdout", str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"5 nodes · best #{best} score=") == 2  # the followed tree and %jx tree
    assert done.stdout.count("★ SOTA") == 2 and "model not found" not in done.stdout
