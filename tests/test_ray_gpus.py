"""``%%rayrun`` GPU placement on a Ray cluster that reports GPUs, without a GPU.

A Ray head started with ``--num-gpus 2`` schedules GPU tasks and hands each its GPU ids
through ``CUDA_VISIBLE_DEVICES`` exactly as on a GPU node, so the path from
``--num-gpus`` / ``--gpu-id`` to what the cell sees and what the store records is tested
for real here; ``test_ray_kernel.test_one_gpu_is_visible`` adds the framework's device
count where a GPU is present. The cluster is started by the test, not by jupyter-exec:
the kernel connects by address and must leave it running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Kernel, free_port, require

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """A two-GPU (declared) Ray head on this machine, in a process group of its own."""
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (pip install -e '.[ray]')")
    port = free_port()
    temp_dir = tmp_path_factory.mktemp("ray-gpus")
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert head.poll() is None, "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up in 90 s"
            time.sleep(0.5)
        yield address, head
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def gpu_kernel(gpu_cluster, tmp_path_factory):
    address, _ = gpu_cluster
    kernel = Kernel(
        tmp_path_factory.mktemp("jx-gpu-data"),
        tmp_path_factory.mktemp("gpu-notebook"),
        env={"JX_RAY_ADDRESS": address, "RAY_AUTH_MODE": "token"},
    )
    yield kernel
    kernel.shutdown()


def _details(kernel: Kernel) -> dict:
    return json.loads(kernel.store().get(kernel.last_run()["id"])["details"] or "{}")


VISIBLE = "%%rayrun {options}\nimport os\nos.environ.get('CUDA_VISIBLE_DEVICES', '')"


def test_one_gpu_cell_sees_exactly_one_gpu(gpu_kernel):
    cell = gpu_kernel.run(VISIBLE.format(options="--num-gpus 1"), timeout=120, check=True)
    visible = eval(cell.result_text)
    assert visible in ("0", "1")
    details = _details(gpu_kernel)
    assert details["gpu_ids"] == [visible]  # recorded with the run
    assert gpu_kernel.last_run()["status"] == "succeeded"


def test_two_gpus_and_no_gpu(gpu_kernel):
    both = gpu_kernel.run(VISIBLE.format(options="--num-gpus 2"), check=True)
    assert sorted(eval(both.result_text).split(",")) == ["0", "1"]
    none = gpu_kernel.run(VISIBLE.format(options=""), check=True)
    assert none.result_text == "''"  # a CPU cell is given no GPU


def test_gpu_id_pins_the_device(gpu_kernel):
    cell = gpu_kernel.run(VISIBLE.format(options="--gpu-id 1"), check=True)
    assert cell.result_text == "'1'"
    assert _details(gpu_kernel)["cuda_visible_devices"] == "1"


def test_more_gpus_than_any_node_fails_at_once_naming_the_gpus(gpu_kernel):
    started = time.monotonic()
    cell = gpu_kernel.run(VISIBLE.format(options="--num-gpus 3"))
    assert time.monotonic() - started < 10
    message = cell.stderr  # IPython shows a UsageError as one line, no traceback
    assert message.startswith("UsageError:")
    assert "3 GPU" in message and "2 GPU" in message  # what was asked, and what the node has


def test_disconnecting_leaves_the_cluster_running(gpu_cluster, gpu_kernel, tmp_path):
    address, head = gpu_cluster
    other = Kernel(tmp_path / "data", tmp_path, env={"JX_RAY_ADDRESS": address, "RAY_AUTH_MODE": "token"})
    other.run("%%rayrun\n1", timeout=120, check=True)
    other.shutdown()
    time.sleep(1)
    assert head.poll() is None
    assert gpu_kernel.run("%%rayrun --num-gpus 1\n'still up'", check=True).result_text == "'still up'"
