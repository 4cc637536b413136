"""Shared fixtures: a real IPython kernel with the extension loaded, and a JupyterLab
server, each started once.

Tests talk to the kernel the way a notebook does (jupyter_client over ZeroMQ) and read
what a user would see: iopub messages, the namespace, the run store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from jupyter_exec.backends.process.templates import OWNER_NS_VAR, OWNER_VAR, pid_namespace
from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords

REQUIRE_ALL = os.environ.get("JX_REQUIRE_ALL") == "1"
# The session runs inside a hub-like container (scripts/hub-container-test): Docker's default
# seccomp profile and capabilities, so no namespace can be made, for real.
HUB_CONTAINER = os.environ.get("JX_TEST_HUB_CONTAINER") == "1"
# Every kernel of the session where no namespace can be made: in the hub-like container, or on a
# host under the imitation of one (scripts/test-as-user's second pass: tests/no_namespaces.py).
NO_NAMESPACES = HUB_CONTAINER or os.environ.get("JX_TEST_NO_NAMESPACES") == "1"


# In a cell: its /proc/self/status as a dict (CapEff, NoNewPrivs, Seccomp_filters, ...).
CELL_STATUS = "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"


# In a cell: output written below Python's sys.stdout/sys.stderr, as C extensions and subprocesses
# write it; FD_OUTPUT_SEEN is what the cell shows of it (stdout lines, stderr lines).
FD_OUTPUT = (
    "import ctypes, os, subprocess\n"
    "os.write(1, b'fd 1\\n'); os.write(2, b'fd 2\\n')\n"
    "subprocess.run(['echo', 'from echo'])\n"
    "subprocess.run(['sh', '-c', 'echo from sh >&2'])\n"
    "libc = ctypes.CDLL(None); libc.printf(b'from printf\\n'); libc.fflush(None)\n"
)
FD_OUTPUT_SEEN = ({"fd 1", "from echo", "from printf"}, {"fd 2", "from sh"})


def user_env(**extra: str) -> dict[str, str]:
    """The environment a kernel (or a Jupyter server) gets, as a user's does: this process's, but
    for pytest's PYTEST_CURRENT_TEST, which makes ipykernel skip capturing fd 1 and 2 into the cell."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}, **extra}


def listed_gpus() -> list[str]:
    """The GPUs ``nvidia-smi -L`` lists on this machine (none where it is missing or fails)."""
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]


def require_gpu() -> list[str]:
    """The GPUs listed here; the one skip ``JX_REQUIRE_ALL`` allows is a machine that lists none.
    Where one is listed, a GPU test that cannot use it fails."""
    gpus = listed_gpus()
    if not gpus:
        pytest.skip("no GPU on this machine: nvidia-smi -L lists none")
    return gpus


def require(condition: bool, reason: str) -> None:
    """Skip when a part is missing on a developer's machine; fail in CI (JX_REQUIRE_ALL=1)."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required part missing: {reason}")
    pytest.skip(reason)


@dataclass
class CellResult:
    """What a notebook would show for one executed cell."""

    stdout: str = ""
    stderr: str = ""
    displays: list[dict] = field(default_factory=list)
    result: dict | None = None
    error: dict | None = None
    stream_times: list[float] = field(default_factory=list)
    finished_at: float = 0.0

    @property
    def result_text(self) -> str:
        return (self.result or {}).get("text/plain", "")


def kernel_manager(launcher: tuple[str, ...] = ()) -> KernelManager:
    """A manager of this Python's kernel, started through ``launcher`` (a command that runs
    the rest of its arguments, such as ``systemd-run --user --scope``); under
    ``JX_TEST_NO_NAMESPACES=1`` (outside the hub-like container) the kernel starts under
    ``no_namespaces.py``, so no namespace can be made in it."""
    km = KernelManager(kernel_name="python3")
    if NO_NAMESPACES and not HUB_CONTAINER:
        km.kernel_spec.argv[:0] = [sys.executable, str(Path(__file__).with_name("no_namespaces.py"))]
    km.kernel_spec.argv[:0] = launcher
    return km


class Kernel:
    """A running kernel and a client to drive it."""

    def __init__(
        self, data_dir: Path, cwd: Path, env: dict[str, str] | None = None, launcher: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        self.cwd = cwd
        self.km = kernel_manager(launcher)
        self.km.start_kernel(cwd=str(cwd), env=user_env(JX_DATA_DIR=str(data_dir), **(env or {})))
        self.client = self.km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.loaded = self.run("%load_ext jupyter_exec", check=True)  # what loading the extension showed

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def messages(self, msg_id: str, timeout: float):
        """The iopub messages of one execute request, up to and including its final idle."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                raise TimeoutError(f"cell did not finish in {timeout} s") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            yield msg
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return

    def run(self, code: str, timeout: float = 120, check: bool = False) -> CellResult:
        return self.collect(self.client.execute(code), timeout, check, code)

    def collect(self, msg_id: str, timeout: float = 120, check: bool = False, code: str = "") -> CellResult:
        """What the cell of execute request ``msg_id`` showed, once it has finished."""
        cell = CellResult()
        for msg in self.messages(msg_id, timeout):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                setattr(cell, content["name"], getattr(cell, content["name"]) + content["text"])
                cell.stream_times.append(time.monotonic())
            elif kind == "display_data":
                cell.displays.append(content["data"])
            elif kind == "execute_result":
                cell.result = content["data"]
            elif kind == "error":
                cell.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                cell.finished_at = time.monotonic()
        if check and cell.error:
            raise AssertionError(f"cell failed: {cell.error['ename']}: {cell.error['evalue']}\n{code}")
        return cell

    def interrupt_run(self, code: str) -> dict:
        """Execute ``code``, press Kernel → Interrupt once its run is going; the execute reply."""
        msg_id = self.client.execute(code)
        deadline = time.monotonic() + 20
        while (
            not (self.records().runs(1) and self.records().runs(1)[0]["status"] == "running")
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(0.5)
        self.km.interrupt_kernel()
        reply = self.client.get_shell_msg(timeout=20)
        while reply["parent_header"]["msg_id"] != msg_id:
            reply = self.client.get_shell_msg(timeout=20)
        return reply["content"]

    def seconds(self, cell: str) -> float:
        """Wall seconds ``cell`` takes to run here now: the baseline a bound on a like cell scales
        from, so the machine's load moves both (measure it in the same test, just before)."""
        started = time.monotonic()
        self.run(cell, check=True)
        return time.monotonic() - started

    def fails_as(self, cell: str, ename: str, status: str, what: str = "") -> float:
        """Run a cell that must end in ``ename``, recorded as ``status``; its wall time in seconds."""
        started = time.monotonic()
        result = self.run(cell)
        elapsed = time.monotonic() - started
        assert result.error is not None, f"{what}: the cell succeeded"
        assert result.error["ename"] == ename, f"{what}: {result.error['ename']}: {result.error['evalue']}"
        assert self.last_run()["status"] == status, what
        return elapsed

    def refused(self, cell: str) -> str:
        """The one-line UsageError ``cell`` gets (without its prefix); asserts that nothing ran
        (the cell body prints 'ran') and that no run was recorded."""
        before = self.records().runs(1)
        result = self.run(cell)
        assert result.stderr.startswith("UsageError: ") and result.stderr.count("\n") == 1, result
        assert "ran" not in result.stdout and self.records().runs(1) == before
        return result.stderr.removeprefix("UsageError: ").rstrip("\n")

    def assert_no_run_processes(self) -> None:
        """Only idle workers and fork servers (their cwd is ``/``, no run's scratch directory)
        may remain of this kernel's runs, within 5 s."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            busy = [p for p in owned_processes(self.pid) if not _is_idle_worker(p)]
            if not busy:
                return
            time.sleep(0.1)
        raise AssertionError(f"processes of finished runs remain: {busy}")

    def doctor(self) -> str:
        """What ``%jx doctor`` says in this kernel (what a limit's enforcement depends on)."""
        if not hasattr(self, "_doctor"):
            self._doctor = self.run("%jx doctor", check=True).stdout
        return self._doctor

    def offers(self, note: str) -> bool:
        """Whether the seccomp backend's doctor notes include ``note`` (e.g. "--shm: a fresh")."""
        lines = self.doctor().split("ok   seccomp\n", 1)[-1].splitlines()
        section = lines[: next((i for i, line in enumerate(lines) if not line.startswith(" ")), len(lines))]
        return any(note in line for line in section)

    def eval(self, expression: str):
        """A value from the kernel's namespace, via repr -> literal."""
        import ast

        cell = self.run(f"print(repr({expression}))", check=True)
        return ast.literal_eval(cell.stdout.strip())

    def records(self) -> RunRecords:
        return RunRecords(self.data_dir / "runs.sqlite3")

    def last_run(self) -> dict:
        return self.records().runs(limit=1)[0]

    def shown(self, run_id: int) -> dict:
        """What ``%jx show N`` says of a run as data: its JSON (the lines after it are for reading)."""
        return json.JSONDecoder().raw_decode(self.run(f"%jx show {run_id}", check=True).stdout)[0]

    def last_log(self) -> str:
        """The log of the last run so far (what it printed, and what its backend noted)."""
        path = self.last_run()["log_path"]
        return Path(path).read_text() if path and Path(path).exists() else ""

    def start(self, code: str, printed: str, timeout: float = 90) -> str:
        """Execute ``code`` and return once its run is going and has printed ``printed``; the
        request's id, for ``collect``."""
        msg_id = self.client.execute(code)
        deadline = time.monotonic() + timeout
        while not ([r["status"] for r in self.records().runs(1)] == ["running"] and printed in self.last_log()):
            assert time.monotonic() < deadline, (
                f"the run did not print {printed!r} within {timeout:g} s: {self.records().runs(1)}, {self.last_log()!r}"
            )
            time.sleep(0.2)
        return msg_id

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.km.shutdown_kernel(now=False)

    def shutdown_leaving_nothing(self) -> None:
        """Shut down, then check that no process of its runs outlives it (within 20 s)."""
        pid = self.pid
        self.shutdown()
        deadline = time.monotonic() + 20
        while owned_processes(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not owned_processes(pid), f"processes of the kernel's runs remain: {owned_processes(pid)}"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jx-data")


@pytest.fixture(scope="session")
def notebook_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook")


@pytest.fixture(scope="session")
def kernel(data_dir, notebook_dir):
    k = Kernel(data_dir, notebook_dir)
    yield k
    k.shutdown_leaving_nothing()


def add_run(store: RunRecords, name: str, status: Status | None = Status.SUCCEEDED, **fields) -> int:
    """Record a run in ``store`` as a kernel would, finished as ``status`` (None: left queued); its id."""
    run = store.create_run(
        **{
            "kernel": "k",
            "owner_pid": 1,
            "name": name,
            "backend": "local",
            "isolation": "none",
            "spec": {},
            "code": "pass",
            "code_hash": "0",
            **fields,
        }
    )
    if status is not None:
        store.finish_run(run, status)
    return run


def _is_idle_worker(pid: int) -> bool:
    """A pooled worker not yet given a run (or a fork server) has no scratch directory as its cwd."""
    try:
        return os.readlink(f"/proc/{pid}/cwd") == "/"
    except OSError:
        return True


def owned_processes(owner_pid: int) -> list[int]:
    """Processes started by jupyter-exec for the kernel with this pid (in this pid namespace: a
    container's kernel may have the same pid in its own)."""
    found = []
    markers = {f"{OWNER_VAR}={owner_pid}".encode(), f"{OWNER_NS_VAR}={pid_namespace()}".encode()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if markers <= set((entry / "environ").read_bytes().split(b"\0")):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def make_wheel(directory: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel with one module, built by hand (no network, no build backend)."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}"
    files = {
        f"{name}.py": source,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: jupyter-exec-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = "".join(f"{path},sha256={digest(text)},{len(text.encode())}\n" for path, text in files.items())
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
        wheel.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """The session's one Chromium (Debian's, driven by Playwright's sync API, which allows one
    instance per thread: every browser test shares it)."""
    require(Path(CHROMIUM).exists(), "Chromium not installed (apt-get install chromium)")
    require(importlib.util.find_spec("playwright") is not None, "playwright not installed (pip install -e .[test])")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # 2 shared cores: give the page time, never a fixed sleep
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server of our own: token, free port, private settings, its own jupyter-exec
    store (``data_dir``: kernels pointed there show in its side panel); stopped at the end."""
    require(shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is not None, "jupyterlab not installed")
    home = tmp_path_factory.mktemp("lab")
    # Draw every cell (no windowing) so off-screen outputs exist in the page; no news toast.
    for plugin, values in (
        ("notebook-extension/tracker", {"windowingMode": "none"}),
        ("apputils-extension/notification", {"fetchNews": "false"}),
    ):
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    root = home / "notebooks"
    root.mkdir()
    data_dir = home / "jx-data"
    token, port = secrets.token_hex(16), free_port()
    env = user_env(
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JX_DATA_DIR=str(data_dir),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.allow_root=True",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "wb"),
    )
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
    yield {"url": url, "token": token, "root": root, "data_dir": data_dir}
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="session")
def network_lab(tmp_path_factory):
    """The servers of the ``--network HOST,...`` tests, in a network namespace of their own
    (``tests/network_lab.py``)."""
    from network_lab import SHARED_VAR, NetworkLab

    if os.environ.get(SHARED_VAR):  # made by root for the ordinary account (scripts/test-as-user)
        yield NetworkLab.attach(Path(os.environ[SHARED_VAR]))
        return
    require(NetworkLab.possible(), "the network lab needs root, ip (iproute2) and openssl")
    lab = NetworkLab(tmp_path_factory.mktemp("network-lab")).start()
    yield lab
    lab.stop()
