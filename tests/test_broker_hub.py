"""The broker as a JupyterHub service (docs/broker.md): a real hub runs jx-user's and jx-user2's
servers as those accounts (LocalProcessSpawner), and the broker as a managed service behind the
hub's proxy; a kernel of each user's server runs a container cell through it, the broker
knowing each by the token it checks with the hub. One hub for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest
from conftest import require
from hub import USER_VENV, Hub

pytestmark = pytest.mark.kernel

USERS = (os.environ.get("JX_USER", "jx-user"), os.environ.get("JX_USER2", "jx-user2"))
POLICY = "memory: 1g\nquotas: {runs: 2}\n"


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
    assert {line["user"] for line in ran} == set(USERS)


def test_a_request_without_a_users_token_is_refused(hub):
    for token in ("", "not-a-token", hub.token):  # none, unknown, a service's
        request = urllib.request.Request(
            hub.broker_url + "api/v1", data=b'{"v": 1, "op": "hello"}', headers={"Authorization": f"token {token}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code in (401, 403)
        assert json.loads(refused.value.read())["t"] == "error"
