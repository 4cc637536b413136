"""The side panel's runs list in real Chromium, as a user first sees it: a map is one row with its
batches folded under it, and the panel's default width shows status, name and time."""

from __future__ import annotations

import pytest
from conftest import Kernel
from test_browser import _command

pytestmark = pytest.mark.browser


def test_the_runs_list_folds_a_map_and_reads_at_its_default_width(lab, browser):
    from playwright.sync_api import expect

    kernel = Kernel(lab["data_dir"], lab["root"])
    try:
        kernel.run(
            "import jupyter_exec\njupyter_exec.map('item * 2', range(6), backend='local', batch_size=2)", check=True
        )
        map_id = kernel.records().runs(10, columns=("id", "name"), batches=False)[0]["id"]
        kernel.run("%%sandbox --backend local\n# no name: the first line of code tells it apart\nprint('unnamed')")
    finally:
        kernel.shutdown()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{lab['url']}/lab/workspaces/runs-list?token={lab['token']}")
        expect(page.locator("#jp-main-statusbar")).to_be_visible(timeout=60_000)
        _command(page, "jupyter-exec: Show runs")
        panel = page.locator("#jupyter-exec-panel")
        rows = panel.locator(".jx-RunsView .jx-row")
        expect(rows.filter(has_text="map: item * 2 (3 batches)")).to_have_count(1, timeout=30_000)
        expect(rows.filter(has_text=f"map {map_id}[")).to_have_count(0)  # its batches are folded under it
        expect(rows.filter(has_text="print('unnamed')")).to_have_count(1)
        for shown in ("status", "name", "time"):  # the panel's default width
            expect(panel.locator(".jx-RunsView th", has_text=shown)).to_be_visible()
        expect(panel.locator(".jx-RunsView th", has_text="backend")).to_be_hidden()
        rows.filter(has_text="map: item * 2").click()
        batches = panel.locator(".jx-info dd").filter(has_text=f"#{map_id + 1} succeeded")
        expect(batches).to_have_count(1)
    finally:
        page.close()
