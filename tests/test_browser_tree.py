"""The experiment tree outlives its kernel, in real Chromium: a notebook that grows a tree with
``explore`` and shows it with ``%jx tree`` is saved, its kernel restarted and the page reloaded;
the tree's nodes are still read there (no "model not found"), and in nbconvert's HTML and text.
``%jx resources`` beside it too."""

from __future__ import annotations

import re

import nbformat
import pytest
from test_browser import (
    SHOTS,
    _nbconvert_html,
    _notebook,
    _runner,
    _save_restart_reload,
    _shot,
    _shut_down,
    _widget_outputs,
    _workspace,
)

pytestmark = pytest.mark.browser

TREE_CELLS = [
    "%load_ext jupyter_exec",
    # explore grows the tree live in its cell (the process sandbox: quick, no engine needed)
    "from jupyter_exec import explore\nscores = iter([0.3, 0.9, 0.5, 0.7, 0.2])\n"
    "t = explore(lambda parent: f'score = {next(scores)}\\nscore', budget=5, trace='kept', backend='local')\n"
    "print('best', t.sota().id, 'of', len(t))",
    "%jx tree kept",
    "%jx resources",  # a snapshot: HTML cards, no widget
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
        cells = _save_restart_reload(page, len(TREE_CELLS))
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        tree = cells.nth(2).locator(".jx-tree-static")
        expect(tree.locator(".jx-tree-static-node")).to_have_count(5)
        expect(tree.locator(f".jx-tree-static-node[data-id='{best}']")).to_contain_text("★ SOTA")
        expect(tree.locator(".jx-tree-static-path")).to_contain_text(f"#{best}")
        expect(cells.nth(3).locator(".jx-resources .jx-card[data-ok='true']")).not_to_have_count(0)
        for gone in ("model not found", "Error displaying widget", "Loading widget"):
            expect(page.locator(".jp-Notebook")).not_to_contain_text(gone)
        _shot(tree, "tree-reopened")
        _shut_down(page)
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "tree-notebook.png"), full_page=True)
        page.close()

    saved = lab["root"] / name
    notebook = nbformat.read(saved, as_version=4)
    assert not _widget_outputs(notebook)
    plain = [o["data"]["text/plain"] for o in notebook.cells[2].outputs if "data" in o]
    assert plain and plain[0].startswith(f"trace 'kept': maximise score, 5 nodes, best #{best}")  # a text view
    page_html = _nbconvert_html(saved)
    assert page_html.count(f"5 nodes · best #{best} score=") == 2  # the followed tree and %jx tree
    assert page_html.count("★ SOTA") == 2 and "model not found" not in page_html
