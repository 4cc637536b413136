"""A real JupyterHub for the broker's tests: the hub (run as root), configurable-http-proxy,
LocalProcessSpawner starting each user's server as that Unix account (from the users' venv,
with this tree first on its path), and the broker as a hub-managed service.

``Hub.execute`` runs code in a kernel of a user's server the way JupyterLab does: a kernel
started through the server's REST API, code sent over its websocket with the user's token.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USER_VENV = Path(os.environ.get("JX_USER_VENV", "/opt/jupyter-exec/user-venv"))
SERVICE = "jupyter-exec"
CONFIG = """
c.JupyterHub.bind_url = {bind!r}
c.JupyterHub.hub_bind_url = {hub!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.JupyterHub.db_url = {db!r}
c.JupyterHub.cookie_secret_file = {cookie!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = set({users!r})
c.JupyterHub.load_groups = {{"students": {{"users": {students!r}}}}}
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{"JX_BROKER": {broker!r}, "PYTHONPATH": {root!r}, "PYTHONDONTWRITEBYTECODE": "1"}}
c.JupyterHub.services = [
    {{"name": {service!r}, "url": {service_url!r}, "command": {command!r}}},
    {{"name": "tester", "api_token": {token!r}}},
]
c.JupyterHub.load_roles = [
    {{
        "name": "tester",
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
        "services": ["tester"],
    }},
]
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Hub:
    """A running hub with the broker as its service (see the module docstring); every user but
    the first is in the hub group ``students``."""

    def __init__(self, users: tuple[str, ...], policy: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="jx-hub-"))
        self.users = users
        self.url = f"http://127.0.0.1:{free_port()}"
        self.token, self.password = uuid.uuid4().hex, uuid.uuid4().hex
        self.broker_url = f"{self.url}/services/{SERVICE}/"
        self.audit = self.home / "audit.jsonl"
        (self.home / "broker.yaml").write_text(policy)
        command = [
            sys.executable,
            "-m",
            "jupyter_exec.cli",
            "broker",
            "--hub",
            "--policy",
            str(self.home / "broker.yaml"),
        ]
        self.admin_socket = self.home / "admin.sock"  # the admin commands' way in
        command += [
            "--data-dir",
            str(self.home / "broker"),
            "--audit",
            str(self.audit),
            "--socket",
            str(self.admin_socket),
        ]
        (self.home / "jupyterhub_config.py").write_text(
            CONFIG.format(
                bind=self.url,
                hub=f"http://127.0.0.1:{free_port()}",
                proxy_api=f"http://127.0.0.1:{free_port()}",
                db=f"sqlite:///{self.home / 'hub.sqlite'}",
                cookie=str(self.home / "cookie_secret"),
                password=self.password,
                users=list(users),
                students=list(users[1:]),
                singleuser=str(USER_VENV / "bin" / "jupyterhub-singleuser"),
                broker=self.broker_url,
                root=str(ROOT),
                service=SERVICE,
                service_url=f"http://127.0.0.1:{free_port()}",
                command=command,
                token=self.token,
            )
        )
        self.log = open(self.home / "hub.log", "ab")
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.home / "jupyterhub_config.py")],
            cwd=self.home,
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "PATH": path},
            start_new_session=True,
        )
        self._wait(lambda: self.api("GET", "/hub/api/") is not None, 90, "the hub did not start")
        self._wait(self._broker_up, 60, "the broker service did not start")
        self.tokens = {user: self._start_server(user) for user in users}

    def log_text(self) -> str:
        return (self.home / "hub.log").read_text(errors="replace")[-4000:]

    def _wait(self, done: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if done():
                    return
            except (OSError, urllib.error.URLError):
                pass
            assert self.process.poll() is None, f"{what}: the hub exited\n{self.log_text()}"
            assert time.monotonic() < deadline, f"{what}\n{self.log_text()}"
            time.sleep(0.3)

    def _broker_up(self) -> bool:
        request = urllib.request.Request(self.broker_url + "api/v1", data=b"{}", method="POST")
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as error:
            return error.code == 401  # the broker answers (no token)
        return False

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"token {token or self.token}")
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
        return json.loads(text) if text else {}

    def _start_server(self, user: str) -> str:
        """Start ``user``'s server; a token of theirs, for their server's API."""
        try:
            self.api("POST", f"/hub/api/users/{user}/server")
        except urllib.error.HTTPError as error:
            assert error.code in (201, 202, 400), error
        self._wait(
            lambda: self.api("GET", f"/hub/api/users/{user}")["servers"].get("", {}).get("ready"),
            120,
            f"{user}'s server",
        )
        return str(self.api("POST", f"/hub/api/users/{user}/tokens", {"note": "test", "expires_in": 3600})["token"])

    def start_kernel(self, user: str) -> str:
        return str(self.api("POST", f"/user/{user}/api/kernels", {"name": "python3"}, self.tokens[user])["id"])

    def execute(self, user: str, kernel: str, code: str, timeout: float = 120) -> dict[str, Any]:
        """Run ``code`` in ``kernel`` over its websocket: stdout, stderr, result and error, as a notebook shows them."""
        return asyncio.run(self._execute(user, kernel, code, timeout))

    async def _execute(self, user: str, kernel: str, code: str, timeout: float) -> dict[str, Any]:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = f"{self.url.replace('http', 'ws', 1)}/user/{user}/api/kernels/{kernel}/channels"
        connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.tokens[user]}"}))
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "username": user,
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        }
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        await connection.write_message(json.dumps(message))
        seen: dict[str, Any] = {"stdout": "", "stderr": "", "result": None, "error": None}
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(connection.read_message(), deadline - time.monotonic())
                assert raw is not None, "the kernel's websocket closed"
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, body = reply["msg_type"], reply["content"]
                if kind == "stream":
                    seen[body["name"]] += body["text"]
                elif kind == "execute_result":
                    seen["result"] = body["data"].get("text/plain")
                elif kind == "error":
                    seen["error"] = f"{body['ename']}: {body['evalue']}"
                elif kind == "status" and body["execution_state"] == "idle":
                    return seen
            raise TimeoutError(f"the cell did not finish in {timeout} s: {seen}")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the hub, its proxy and its managed service
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)
