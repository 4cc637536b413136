"""``%%sandbox --backend docker`` (the container backend's other name) through a real kernel,
against the real Docker daemon: GPUs given or refused, images, mounts, runtime envs as images,
resources, interrupts, the start-up reaper. The lock-down and hostile cells, on every engine,
are in test_container_lockdown.py. In CI (JX_REQUIRE_ALL=1) a missing daemon or image fails
these tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import Kernel, make_wheel, require, require_gpu
from containers import assert_no_run_containers, containers

from jupyter_exec.backends.container import ContainerBackend, DockerConfig
from jupyter_exec.backends.container.pool import boot_id
from jupyter_exec.backends.container.runtimes import GVISOR, missing_args
from jupyter_exec.backends.factory import env_builder_for
from jupyter_exec.config import ExecConfig
from jupyter_exec.envs import EnvCache

pytestmark = pytest.mark.kernel
DOCKER = "%%sandbox --backend docker"


@pytest.fixture(scope="module")
def docker_client():
    availability = ContainerBackend.availability()
    require(availability.ok, f"Docker backend: {availability.reason} — {availability.fix}")
    import docker

    return docker.from_env(version="auto")


@pytest.fixture
def kernel(kernel, docker_client):
    """The session kernel, once Docker is known to be there."""
    return kernel


@pytest.mark.gpu
def test_a_gpu_container_reaches_exactly_the_gpu_it_asked_for(kernel, docker_client):
    """Where nvidia-smi lists a GPU, ``--gpus 1`` gives the container one, which nvidia-smi inside
    reaches; no NVIDIA runtime there fails this test (a GPU it cannot use), never skips it."""
    listed = require_gpu()
    assert "nvidia" in docker_client.info().get("Runtimes", {}), (
        f"{len(listed)} GPU(s) listed, but Docker has no NVIDIA runtime: install the NVIDIA Container Toolkit"
    )
    cell = kernel.run(
        f"{DOCKER} --gpus 1\nimport subprocess\nsubprocess.run(['nvidia-smi', '-L'], capture_output=True, "
        "text=True, check=True).stdout.splitlines()",
        check=True,
    )
    inside = [line for line in eval(cell.result_text) if line.startswith("GPU ")]
    assert len(inside) == 1 and inside[0].split("(UUID: ")[-1] in "\n".join(listed), (inside, listed)


def test_gpu_request_fails_at_once_with_the_reason(kernel, docker_client):
    if "nvidia" in docker_client.info().get("Runtimes", {}):
        pytest.skip("Docker has the NVIDIA runtime here: --gpus is given, not refused (the test above)")
    refusal = kernel.refused(f"{DOCKER} --gpus 1\nprint('ran')")  # at once: before any run is recorded
    assert "no NVIDIA runtime" in refusal, refusal
    assert kernel.run(f"{DOCKER} --gpus two\npass").stderr.startswith("UsageError: --gpus: cannot read")


def test_image_option_picks_the_image_and_docker(kernel, docker_client):
    cell = kernel.run(
        "%%sandbox --image jupyter-exec/base:latest\nimport os\nos.path.exists('/.dockerenv')", check=True
    )
    assert cell.result_text == "True" and kernel.last_run()["backend"] == "container"  # --image implies it
    assert "building image" not in cell.stdout + cell.stderr  # an image alone needs no derived image
    missing = kernel.run("%%sandbox --image jupyter-exec/no-such-image\nprint('ran')")
    (progress,), (error,) = missing.stdout.splitlines(), missing.stderr.splitlines()  # information, then the error
    assert progress.endswith("building for docker:jupyter-exec/no-such-image"), missing
    assert error.startswith(
        "UsageError: container backend unavailable: image jupyter-exec/no-such-image is not on "
        "this machine — build or pull it first"
    ), missing
    assert "ran" not in missing.stdout.splitlines()
    assert "only the container backend runs images" in kernel.refused(
        "%%sandbox --backend seccomp --image jupyter-exec/base:latest\nprint('ran')"
    )  # never ignored


def test_a_runtime_is_for_the_container_backend_and_must_exist(kernel):
    assert kernel.refused("%%sandbox --backend seccomp --runtime runsc\nprint('ran')") == (
        "--runtime runsc is for the container backend; drop --backend seccomp"
    )
    cell = kernel.run(f"{DOCKER} --runtime no-such-runtime\nprint('ran')")
    assert cell.stderr.startswith("UsageError: container backend unavailable: --runtime no-such-runtime: the engine")
    assert "has no such runtime" in cell.stderr and "ran" not in cell.stdout


def test_the_policy_can_force_gvisor(tmp_path):
    """``runtime: runsc`` in the administrator's policy: every container runs under gVisor, and
    a run asking for another runtime is refused before anything is recorded."""
    require(not missing_args(GVISOR, ContainerBackend(ExecConfig(pool_size=0)).engine.facts.runtimes), "no runsc")
    policy = tmp_path / "policy.yaml"
    policy.write_text("runtime: runsc\n")
    fresh = Kernel(tmp_path / "data", tmp_path, env={"JX_POLICY": str(policy)})
    try:
        assert fresh.run(f"{DOCKER}\nimport os\nos.uname().release", check=True).result_text == "'4.4.0'"
        assert fresh.refused(f"{DOCKER} --runtime runc\nprint('ran')") == (
            f"--runtime runc: the administrator's policy ({policy}) runs every container under runsc; drop --runtime"
        )
        assert "runtime        always runsc" in fresh.run("%jx policy", check=True).stdout
    finally:
        fresh.shutdown()


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
    assert_no_run_containers(docker_client, kernel.pid)


def test_the_start_up_reaper_removes_what_a_dead_kernel_left(docker_client, tmp_path):
    """The second line behind the lifeline: a labelled container whose owner pid is dead on this
    boot (here one with no lifeline at all) is removed when a kernel starts; a live owner's stays.
    That kernel's settings reach its backend, its pool refills, and its pool goes with it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    labels = {"jupyter-exec.kernel": "pid-test", "jupyter-exec.run": "orphan", "jupyter-exec.boot-id": boot_id()}
    started = {}
    for owner in (dead.pid, os.getpid()):
        started[owner] = docker_client.containers.run(
            DockerConfig().image,
            ["sleep", "300"],
            detach=True,
            network_mode="none",
            labels={**labels, "jupyter-exec.owner-pid": str(owner)},
        )
    fresh = Kernel(tmp_path / "data", tmp_path)  # its manager reaps at start-up
    fresh_pid = fresh.pid
    try:
        assert containers(docker_client, owner_pid=str(dead.pid)) == []
        assert containers(docker_client, owner_pid=str(os.getpid())), "a live kernel's container was reaped"
        fresh.run("%config DockerConfig.tmp_size = '64m'", check=True)
        cell = fresh.run(f"{DOCKER}\nimport os\ns = os.statvfs('/tmp')\ns.f_blocks * s.f_frsize // 2**20", check=True)
        assert cell.result_text == "64"  # %config reaches the backend's settings
        deadline = time.monotonic() + 10
        while not containers(docker_client, owner_pid=str(fresh_pid), run="pool") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert containers(docker_client, owner_pid=str(fresh_pid), run="pool"), "the pool did not refill"
    finally:
        fresh.shutdown()
        started[os.getpid()].remove(force=True)
    assert containers(docker_client, owner_pid=str(fresh_pid)) == []  # its pool went with it


def test_no_run_containers_remain(kernel, docker_client):
    assert_no_run_containers(docker_client, kernel.pid)


def test_a_gvisor_sessions_later_cell_is_handed_over_at_once(kernel):
    """Under gVisor a later cell says nothing on the protocol channel until it ends: the host must not
    wait for a word from it before the cell counts as started (it waited 10 s, so the cell showed
    queued and an interrupt went unheard that long). As root: gVisor is registered with rootful Docker."""
    require(not missing_args(GVISOR, ContainerBackend(ExecConfig(pool_size=0)).engine.facts.runtimes), "no runsc")
    session = "%%sandbox --backend container --runtime runsc --session later"
    kernel.run(f"{session}\nkept = 'still here'", check=True)
    sent = time.monotonic()
    reply = kernel.interrupt_run(f"{session}\nimport time\ntime.sleep(60)")
    assert reply["ename"] == "KeyboardInterrupt" and kernel.last_run()["status"] == "cancelled"
    assert time.monotonic() - sent < 8, "the cell was not handed over until the host stopped waiting (10 s)"
    assert kernel.run(f"{session}\nprint(kept)", check=True).stdout == "still here\n"
    kernel.run("%jx end later", check=True)
