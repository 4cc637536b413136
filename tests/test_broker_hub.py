"""The broker as a JupyterHub service (docs/broker.md): a real hub runs jx-user's and jx-user2's
servers as those accounts (LocalProcessSpawner), and the broker as a managed service behind the
hub's proxy; a kernel of each user's server runs a container cell through it, the broker
knowing each by the token it checks with the hub. One hub for the module.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import require
from hub import USER_VENV, Hub
from test_browser import _notebook, _runner

pytestmark = pytest.mark.kernel

USERS = (os.environ.get("JX_USER", "jx-user"), os.environ.get("JX_USER2", "jx-user2"))
POLICY = "memory: 1g\nquotas: {runs: 2}\ngroups:\n  students: {runtime: runsc}\n"


@pytest.fixture(scope="module")
def hub():
    require(os.geteuid() == 0, "root (the hub spawns each user's server as that account)")
    require(shutil.which("configurable-http-proxy") is not None, "configurable-http-proxy (scripts/setup.d/70)")
    require((USER_VENV / "bin" / "jupyterhub-singleuser").exists(), "jupyterhub in the users' venv (setup.d/70)")
    running = Hub(USERS, POLICY)
    yield running
    running.stop()


def test_each_users_kernel_runs_a_container_cell_through_the_hub_service(hub):
    for user in USERS:
        kernel = hub.start_kernel(user)
        loaded = hub.execute(
            user, kernel, "%load_ext jupyter_exec\nimport os\nos.getuid() != 0, 'JUPYTERHUB_API_TOKEN' in os.environ"
        )
        assert loaded["error"] is None and loaded["result"] == "(True, True)", loaded
        cell = hub.execute(user, kernel, f"%%sandbox --backend container\nprint('via the hub')\n'{user}'")
        assert cell["error"] is None and cell["stdout"] == "via the hub\n" and cell["result"] == f"'{user}'", cell
        refused = hub.execute(user, kernel, "%%sandbox --backend container --mem 4g\nprint('ran')")
        assert "ran" not in refused["stdout"] and "above the administrator's ceiling of 1g" in refused["stderr"], (
            refused
        )
    audit = [json.loads(line) for line in hub.audit.read_text().splitlines()]
    ran = [line for line in audit if line["op"] == "run" and line["decision"] == "ran"]
    assert {line["user"] for line in ran} == set(USERS) and {line["via"] for line in ran} == {"hub"}
    # the hub's group students (jx-user2) has gVisor forced by the broker's policy; jx-user is in none
    assert {line["user"]: line["runtime"] for line in ran} == {USERS[0]: None, USERS[1]: "runsc"}


def test_a_user_cannot_reach_another_users_runs_through_the_hub(hub):
    """With jx-user's token: jx-user2's side-panel REST API is closed (the hub), and the broker answers
    about jx-user2's runs as about runs that do not exist."""
    alice, bob = USERS
    theirs = _broker(hub, hub.tokens[bob], {"op": "runs", "finished": True})[0]["runs"]
    assert theirs and {row["user"] for row in theirs} == {bob}
    mine = _broker(hub, hub.tokens[alice], {"op": "runs", "finished": True})[0]["runs"]
    assert mine and {row["user"] for row in mine} == {alice}
    for op in ("show", "logs", "cancel"):
        (answer,) = _broker(hub, hub.tokens[alice], {"op": op, "run": theirs[0]["id"]})
        assert answer["t"] == "error" and answer["status"] == 404, answer
    for path in ("runs", f"runs/{theirs[0]['id']}/log"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            hub.api("GET", f"/user/{bob}/jupyter-exec/api/v1/{path}", token=hub.tokens[alice])
        assert refused.value.code in (403, 404)
    assert hub.api("GET", f"/user/{alice}/jupyter-exec/api/v1/runs", token=hub.tokens[alice])
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_exec.cli", "broker", "runs", "--all", "--socket", str(hub.admin_socket)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0 and f" {alice} " in listed.stdout and f" {bob} " in listed.stdout, listed


def _broker(hub: Hub, token: str, request: dict) -> list[dict]:
    """The broker's events for ``request``, sent through the hub with ``token``."""
    from jupyter_exec.backends.broker.transport import Address, open_stream

    stream = open_stream(Address.parse(hub.broker_url), request, token, timeout=30)
    try:
        events = []
        while (event := stream.next()) is not None:
            events.append(event)
        return events
    finally:
        stream.close()


def test_a_request_without_a_users_token_is_refused(hub):
    for token in ("", "not-a-token", hub.token):  # none, unknown, a service's
        request = urllib.request.Request(
            hub.broker_url + "api/v1", data=b'{"v": 1, "op": "hello"}', headers={"Authorization": f"token {token}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (401, 403)
        assert json.loads(refused.value.read())["t"] == "error"


BODY = "import time\nprint('through the broker', flush=True)\nblock = bytearray(40 << 20)\ntime.sleep(3)\n6 * 7"
CELLS = ["%load_ext jupyter_exec", f"%%sandbox --backend container\n{BODY}"]


@pytest.mark.browser
def test_a_user_logs_in_through_the_hub_and_runs_a_sandbox_cell_in_jupyterlab(hub, browser):
    """Chromium: the hub's login page, the user's JupyterLab, a %%sandbox cell run through the broker."""
    from playwright.sync_api import expect

    user = USERS[1]
    account = pwd.getpwnam(user)
    name = "broker-hub.ipynb"
    _notebook(Path(account.pw_dir), name, CELLS)
    os.chown(Path(account.pw_dir) / name, account.pw_uid, account.pw_gid)
    before = len(_runs_of(hub, user))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", user)
        page.fill("#password_input", hub.password)
        page.click("#login_submit")
        page.wait_for_url(re.compile(rf".*/user/{user}/.*"), timeout=60_000)
        page.goto(f"{hub.url}/user/{user}/lab/tree/{name}")
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(len(CELLS), timeout=60_000)
        expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)
        run, _ = _runner(page, cells)
        run(0)
        run(1, wait=False)
        panel = cells.nth(1).locator(".jx-run")  # the run's widget, its gauges fed by the broker's samples
        expect(panel.locator(".jx-log")).to_contain_text("through the broker", timeout=30_000)
        expect(panel.locator(".jx-status")).to_have_text("running")
        expect(panel.locator(".jx-gauge")).to_have_count(2)
        transcript = cells.nth(1).locator(".jx-transcript")  # what stays once the run is over
        expect(transcript.locator(".jx-transcript-foot")).to_contain_text("succeeded after", timeout=30_000)
        expect(transcript.locator(".jx-transcript-log")).to_contain_text("through the broker")
        expect(cells.nth(1).locator(".jp-OutputArea-executeResult")).to_contain_text("42")
    finally:
        page.close()
        (Path(account.pw_dir) / name).unlink(missing_ok=True)
    assert [line["status"] for line in _runs_of(hub, user)[before:]] == ["succeeded"]


def _runs_of(hub: Hub, user: str) -> list[dict]:
    """The audit log's lines of ``user``'s runs."""
    lines = [json.loads(line) for line in hub.audit.read_text().splitlines()]
    return [line for line in lines if line["user"] == user and line["op"] == "run" and line["decision"] == "ran"]
