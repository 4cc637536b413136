"""``%%sandbox --backend docker`` through a real kernel, against the real Docker daemon.

Results, output, errors, lock-down, limits, mounts, resources and clean-up. In CI
(JX_REQUIRE_ALL=1) a missing daemon or image fails these tests instead of skipping them.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
import time

import pytest
from conftest import Kernel, make_wheel, require

from jupyter_exec.backends.container import DockerBackend
from jupyter_exec.backends.factory import env_builder_for
from jupyter_exec.envs import EnvCache

pytestmark = pytest.mark.kernel
DOCKER = "%%sandbox --backend docker"


@pytest.fixture(scope="module")
def docker_client():
    availability = DockerBackend.availability()
    require(availability.ok, f"Docker backend: {availability.reason} — {availability.fix}")
    import docker

    return docker.from_env(version="auto")


@pytest.fixture
def kernel(kernel, docker_client):
    """The session kernel, once Docker is known to be there."""
    return kernel


def _containers(docker_client, **labels: str) -> list[dict]:
    """Containers with these ``jupyter-exec.*`` labels, as the daemon lists them (Labels, State)."""
    filters = [f"jupyter-exec.{k.replace('_', '-')}={v}" for k, v in labels.items()] or ["jupyter-exec.run"]
    return docker_client.api.containers(all=True, filters={"label": filters})


def _assert_no_run_containers(docker_client, timeout: float = 10) -> None:
    """Only idle pool containers (run label ``pool``) may remain once runs are over."""
    deadline = time.monotonic() + timeout
    while True:
        left = [c["Names"] for c in _containers(docker_client) if c["Labels"].get("jupyter-exec.run") != "pool"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"containers of finished runs remain: {left}"


def test_container_is_locked_down(kernel):
    cell = kernel.run(
        f"{DOCKER}\nimport os, subprocess\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "{'uid': int(subprocess.check_output(['id', '-u'])), 'socket': os.path.exists('/var/run/docker.sock'),\n"
        " 'caps': status['CapEff'].strip(), 'nnp': status['NoNewPrivs'].strip(),\n"
        " 'net': sorted(os.listdir('/sys/class/net')), 'cwd': os.getcwd()}",
        check=True,
    )
    facts = eval(cell.result_text)  # a dict literal printed by the kernel
    assert facts["uid"] != 0
    assert facts["socket"] is False
    assert int(facts["caps"], 16) == 0 and facts["nnp"] == "1"
    assert facts["net"] == ["lo"] and facts["cwd"] == "/tmp"


@pytest.fixture(scope="module")
def listening_port():
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_host_port_and_dns_are_unreachable(kernel, listening_port, docker_client):
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    with socket.create_connection(("127.0.0.1", listening_port), timeout=2):
        pass  # the port does answer from the host
    for host in ("127.0.0.1", gateway):
        cell = kernel.run(f"{DOCKER}\nimport socket\nsocket.create_connection(({host!r}, {listening_port}), timeout=2)")
        assert cell.error and cell.error["ename"] in ("OSError", "ConnectionRefusedError"), (host, cell.error)
        assert kernel.last_run()["status"] == "failed"
    cell = kernel.run(f"{DOCKER}\nimport socket\nsocket.getaddrinfo('example.com', 443)")
    assert cell.error and "gaierror" in cell.error["evalue"] + cell.error["ename"], cell.error
    assert kernel.last_run()["status"] == "failed"


@pytest.mark.parametrize(
    ("name", "options", "code", "status", "ename", "within"),
    [
        ("write /", "", "open('/probe', 'w')", "failed", "OSError", None),
        (
            "fork bomb",
            "--pids 64 --timeout 30",
            "import os\nwhile True:\n    os.fork()",
            "failed",
            "BlockingIOError",
            None,
        ),
        (
            "memory",
            "--mem 256m",
            "block = bytearray(2 * 1024**3)\nblock[::4096] = b'x' * len(block[::4096])",
            "oom",
            "ResourceLimitError",
            None,
        ),
        ("sleep", "--timeout 2", "import time\ntime.sleep(60)", "timeout", "TaskTimeoutError", 4.0),
        (
            "ignores SIGTERM",
            "--timeout 1",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
            "timeout",
            "TaskTimeoutError",
            4.0,
        ),
        ("cpu time", "--cpu-time 1 --timeout 30", "while True:\n    pass", "timeout", "TaskTimeoutError", None),
        ("big file", "--fsize 1m", "open('big', 'wb').write(b'x' * 10_000_000)", "failed", "OSError", None),
    ],
)
def test_hostile_cell_is_contained(kernel, docker_client, name, options, code, status, ename, within):
    elapsed = kernel.fails_as(f"{DOCKER} {options}\n{code}", ename, status, name)
    if within is not None:
        assert elapsed < within, f"{name}: took {elapsed:.1f} s"
    assert kernel.run("print('alive')", check=True).stdout == "alive\n"
    _assert_no_run_containers(docker_client)


def test_filling_tmp_stops_at_the_tmpfs_size(kernel):
    cell = kernel.run(
        f"{DOCKER}\nwritten, error = 0, None\n"
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'x' * 2**20); f.flush(); written += 2**20\n"
        "except OSError as e:\n"
        "    error = e.strerror\n"
        "(written, error)",
        check=True,
    )
    written, error = eval(cell.result_text)
    assert error == "No space left on device"
    assert 200 * 2**20 <= written <= 256 * 2**20  # DockerConfig.tmp_size, 256m by default


def test_gpu_request_fails_at_once_with_the_reason(kernel):
    started = time.monotonic()
    cell = kernel.run(f"{DOCKER} --gpus 1\nprint('ran on a CPU')")
    assert time.monotonic() - started < 2.0
    assert cell.stderr.startswith("UsageError: ") and "no NVIDIA runtime" in cell.stderr, cell
    assert "ran on a CPU" not in cell.stdout
    assert kernel.run(f"{DOCKER} --gpus two\npass").stderr.startswith("UsageError: --gpus: cannot read")


def test_image_option_picks_the_image_and_docker(kernel, docker_client):
    cell = kernel.run(
        "%%sandbox --image jupyter-exec/base:latest\nimport os\nos.path.exists('/.dockerenv')", check=True
    )
    assert cell.result_text == "True" and kernel.last_run()["backend"] == "docker"  # --image implies docker
    assert "building image" not in cell.stderr  # an image alone needs no derived image
    missing = kernel.run("%%sandbox --image jupyter-exec/no-such-image\nprint('ran')")
    progress, error = missing.stderr.splitlines()
    assert progress.endswith("building for docker:jupyter-exec/no-such-image"), missing
    assert error.startswith(
        "UsageError: docker backend unavailable: image jupyter-exec/no-such-image is not on "
        "this machine — build or pull it first"
    ), missing
    assert "ran" not in missing.stdout
    assert "only the docker backend runs images" in kernel.refused(
        "%%sandbox --backend seccomp --image jupyter-exec/base:latest\nprint('ran')"
    )  # never ignored


def test_mounts_are_read_only_unless_rw(kernel, notebook_dir):
    (notebook_dir / "data.txt").write_text("notebook data")
    os.chmod(notebook_dir / "data.txt", 0o666)  # writable for the cell's unprivileged uid, but for the mount
    cell = kernel.run(f"{DOCKER} --mount data.txt:/data/data.txt\nopen('/data/data.txt').read()", check=True)
    assert cell.result_text == "'notebook data'"
    cell = kernel.run(f"{DOCKER} --mount data.txt:/data/data.txt\nopen('/data/data.txt', 'a').write('x')")
    assert cell.error["ename"] == "OSError" and "Read-only" in cell.error["evalue"]
    kernel.run(f"{DOCKER} --mount data.txt:/data/data.txt:rw\nopen('/data/data.txt', 'a').write('!')", check=True)
    assert (notebook_dir / "data.txt").read_text() == "notebook data!"


def test_runtime_env_becomes_a_derived_image(kernel, notebook_dir, docker_client):
    (notebook_dir / "imagewheel").mkdir()
    wheel = make_wheel(notebook_dir / "imagewheel", "jximage", "1.0", "def dumps(d):\n    return repr(sorted(d))\n")
    cell = kernel.run(f"{DOCKER} --pip {wheel}\nimport jximage\njximage.dumps({{'a': 1}})", timeout=300, check=True)
    assert cell.result_text == "\"['a']\""
    assert kernel.run(f"{DOCKER}\nimport jximage").error["ename"] == "ModuleNotFoundError"  # the base is untouched
    kernel.run("envs = %jx envs", check=True)
    [image_env] = kernel.eval(
        "[h for h, t, s in zip(envs.index, envs.target, envs.spec) if t.startswith('docker:') and 'jximage' in s]"
    )
    assert docker_client.images.list(name=f"jupyter-exec/env:{image_env}")
    EnvCache(kernel.data_dir / "envs", kernel.data_dir / "runs.sqlite3", env_builder_for).remove(image_env)
    assert not docker_client.images.list(name=f"jupyter-exec/env:{image_env}")  # the image goes with the env


def test_resources_are_sampled_and_stored(kernel):
    kernel.run(
        f"{DOCKER}\nimport time\nblock = bytearray(150 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n"
        "end = time.time() + 2.5\nwhile time.time() < end:\n    pass",
        check=True,
    )
    run = kernel.last_run()
    assert run["peak_memory"] >= 150 * 2**20
    assert run["cpu_seconds"] >= 1.0
    shown = kernel.run(f"%jx show {run['id']}", check=True).stdout
    assert '"samples": ' in shown and '"samples": 0' not in shown


def test_interrupt_cancels_and_removes_the_container(kernel, docker_client):
    reply = kernel.interrupt_run(f"{DOCKER}\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.last_run()["status"] == "cancelled"
    _assert_no_run_containers(docker_client)


def test_containers_of_a_killed_kernel_are_reaped(docker_client, tmp_path):
    doomed = Kernel(tmp_path / "data", tmp_path)
    try:
        doomed.client.execute(f"{DOCKER} --timeout 5m\nimport time\nprint('started', flush=True)\ntime.sleep(300)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = [
                c
                for c in _containers(docker_client, owner_pid=str(doomed.pid))
                if c["Labels"]["jupyter-exec.run"] != "pool" and c["State"] == "running"
            ]
            if running:
                break
            time.sleep(0.1)
        assert running, "the long cell never started a container"
        os.kill(doomed.pid, signal.SIGKILL)
        assert _containers(docker_client, owner_pid=str(doomed.pid)), "the orphan should outlive its kernel"
    finally:
        doomed.client.stop_channels()
        doomed.km.cleanup_resources()
    fresh = Kernel(tmp_path / "data", tmp_path)  # its manager reaps at start-up
    fresh_pid = fresh.pid
    try:
        assert _containers(docker_client, owner_pid=str(doomed.pid)) == []
        row = fresh.store().runs(limit=1)[0]
        assert row["status"] != "running"
        fresh.run("%config DockerConfig.tmp_size = '64m'", check=True)
        cell = fresh.run(f"{DOCKER}\nimport os\ns = os.statvfs('/tmp')\ns.f_blocks * s.f_frsize // 2**20", check=True)
        assert cell.result_text == "64"  # %config reaches the backend's settings
        deadline = time.monotonic() + 10
        while not _containers(docker_client, owner_pid=str(fresh_pid), run="pool") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _containers(docker_client, owner_pid=str(fresh_pid), run="pool"), "the pool did not refill"
    finally:
        fresh.shutdown()
    assert _containers(docker_client, owner_pid=str(fresh_pid)) == []  # its pool went with it


def test_no_run_containers_remain(docker_client):
    _assert_no_run_containers(docker_client)
