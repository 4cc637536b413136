"""What a user reads about container runs: hints at the container's walls, the out-of-memory
run's peak, and ``jupyter-exec images list``. Against the real engine and the base image."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import NO_NAMESPACES, require
from test_reports_kernel import hints

from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.container.images import IMAGES, build_command, image_tag

pytestmark = pytest.mark.kernel
CONTAINER = "%%sandbox --backend container"


@pytest.fixture(scope="module")
def kernel(kernel):
    if NO_NAMESPACES:  # the no-namespace pass and the hub-like container, as test_container_lockdown.py skips
        pytest.skip("no namespaces: no rootless engine can start here; the first pass tests it")
    availability = ContainerBackend.availability()
    require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    return kernel


def test_no_network_in_a_container_is_explained(kernel):
    cell = kernel.run(f"{CONTAINER} --timeout 60\nimport urllib.request\nurllib.request.urlopen('http://example.com')")
    assert hints(cell, "RemoteError") == ["hint: the sandbox has no network; pass --network to give this run one"]
    assert cell.error["evalue"].startswith("URLError: <urlopen error [Errno -3]")  # behind it, a gaierror


def test_the_read_only_root_is_explained(kernel):
    cell = kernel.run(f"{CONTAINER}\nopen('/etc/jx-test', 'w')")
    assert hints(cell, "OSError") == [
        "hint: the sandbox sees the system read-only, its own scratch directory and only what you --mount; "
        "to write to /etc/jx-test: --mount /etc:rw"
    ]
    assert "Read-only file system" in cell.error["evalue"]


def test_a_command_the_image_lacks_is_explained(kernel):
    cell = kernel.run(f"{CONTAINER}\nimport subprocess\nsubprocess.run(['git', 'status'])")
    assert hints(cell, "FileNotFoundError") == [
        "hint: no command 'git' in the image jupyter-exec/base:latest; use --image with an image that has it"
    ]


def test_the_out_of_memory_run_keeps_its_peak(kernel):
    cell = kernel.run(f"{CONTAINER} --mem 64m --timeout 60\nblock = bytearray(256 * 2**20)")
    assert cell.error["ename"] == "ResourceLimitError", cell.error
    run = kernel.last_run()
    assert run["status"] == "oom" and run["peak_memory"] >= 60 * 2**20, run
    kernel.run("runs = %jx runs", check=True)
    shown = kernel.eval(f"runs.loc[{run['id']}, 'peak memory']")
    assert re.fullmatch(r"6\d\.\d MiB", shown), shown
    log = kernel.run(f"%jx logs {run['id']}", check=True).stdout.splitlines()
    assert re.fullmatch(rf"\[jupyter-exec\] run {run['id']} oom after .* \(peak memory 6\d\.\d MiB\)", log[-2]), log
    assert log[-1].startswith("ResourceLimitError: out of memory: the run needed more than --mem 64m")


def test_images_list_says_what_each_image_is():
    import docker

    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_exec.cli", "images", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "ID", "SIZE", "CREATED", "STATE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    engine = docker.from_env()
    for name in IMAGES:
        tag = image_tag(name)
        try:
            image = engine.images.get(tag)
        except docker.errors.ImageNotFound:
            assert rows[tag].endswith(f"missing: {build_command(tag)}"), rows[tag]
            continue
        size = f"{image.attrs['Size'] / 2**20:.1f} MiB"
        assert rows[tag].split()[1:3] == [image.id.removeprefix("sha256:")[:12], size.split()[0]], rows[tag]
        assert re.search(r"(up to date|outdated: jupyter-exec images build \w+.*)$", rows[tag]), rows[tag]


@pytest.mark.ordinary_user
def test_the_peak_memory_is_the_runs_own(kernel):
    """Rootless Podman on cgroup v1 keeps no cgroup per container: its stats give the whole user's
    memory (a 50 MiB run once read "peak memory 728.0 MiB of 512.0 MiB")."""
    kernel.run(f"{CONTAINER} --mem 512m\nimport time\nx = bytearray(80 * 2**20)\ntime.sleep(3)", check=True)
    run = kernel.last_run()
    assert 80 * 2**20 <= run["peak_memory"] <= 200 * 2**20, run["peak_memory"] / 2**20
