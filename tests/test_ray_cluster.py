"""``%%rayrun`` on a Ray cluster started by the tests, with real Ray processes throughout.

A head started with ``ray start --head`` (two declared GPUs, custom resource ``head``) and a
second node that joins it (custom resource ``second``), each in a process group of its own,
stopped or killed by the tests; one kernel connects to them by address, and must leave
them running when it disconnects. One cluster for the module: a head costs 10-20 s.

GPU placement: a head with ``--num-gpus 2`` schedules GPU tasks and hands each its GPU ids
through ``CUDA_VISIBLE_DEVICES`` exactly as on a GPU node, so the path from ``--num-gpus`` /
``--gpu-id`` to what the cell sees and what the store records is tested without a GPU;
``test_ray_kernel.test_one_gpu_is_visible`` adds the device count where a GPU is present.

Faults: addresses where no cluster answers, a cluster that wants a token or runs another
Ray, a worker the cell ends, a node killed under a run (the other one takes the run over,
for ``--retries``), and the head stopped under a run and started again. (The embedded
local Ray losing its GCS is in ``test_ray_kernel``.)
Whatever happens the cell ends in one line, the kernel stays usable, and Ray's own log
lines stay out of the cell.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import Kernel, free_port, require
from ray_processes import TOKEN_ENV, RayProcess, cluster_metadata, start_head, start_node, wait_for_nodes

pytestmark = pytest.mark.kernel

RAY_LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEFC] \d+ \d+\]|\(raylet\)|rpc_client|gcs_client")
LONG_CELL = (
    "%%rayrun {options}\nimport ray, time\nprint('started on', ray.get_runtime_context().get_node_id(), flush=True)\n"
    "time.sleep({seconds})\n'finished'"
)


class Cluster:
    """The head and nodes of the module, and what the tests do to them."""

    def __init__(self, temp_dir: Path) -> None:
        self.port, self.temp_dir = free_port(), temp_dir
        self.address = f"127.0.0.1:{self.port}"
        self.head = self.start_head()
        self.nodes: list[RayProcess] = []

    def start_head(self) -> RayProcess:
        self.head = start_head(self.port, self.temp_dir, num_cpus=2, gpus=2, resources={"head": 1})
        return self.head

    def add_node(self) -> RayProcess:
        node = start_node(self.address, resources={"second": 1})
        self.nodes.append(node)
        return node

    def kill_node(self, node_id: str) -> None:
        """Kill the node with this id (its whole process group), as when its machine dies."""
        (node,) = [n for n in self.nodes if n.node_id() == node_id]
        node.kill()

    def stop(self) -> None:
        for process in [*self.nodes, self.head]:
            process.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (pip install -e '.[ray]')")
    cluster = Cluster(tmp_path_factory.mktemp("ray-faults"))
    try:
        for count in (1, 2):  # one at a time: nodes starting together on one machine race for ports
            cluster.add_node()
            wait_for_nodes(cluster.address, "second", count)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def kernel(cluster, tmp_path_factory):
    """A kernel whose default Ray is the cluster (not connected until its first %%rayrun)."""
    kernel = jupyter_kernel(tmp_path_factory.mktemp("faults"), JX_RAY_ADDRESS=cluster.address, **TOKEN_ENV)
    yield kernel
    kernel.shutdown()


def jupyter_kernel(directory: Path, **env: str) -> Kernel:
    """A kernel of its own, whose default Ray is none unless ``env`` names one."""
    kernel = Kernel(directory / "data", directory, env={"JX_RAY_ADDRESS": "", **env})
    kernel.run("import ray", check=True)  # 5-10 s on a busy machine: importing is not connecting
    return kernel


def ray_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if RAY_LINE.search(line)]


def refused_in_one_line(kernel: Kernel, cell: str, within: float = 15) -> str:
    """The cell's one-line refusal (no Ray log line around it), in at most ``within`` seconds."""
    started = time.monotonic()
    result = kernel.run(cell)
    took = time.monotonic() - started
    assert took <= within, f"took {took:.1f} s"
    *ours, refusal = result.stderr.splitlines()  # our own progress line, then the refusal
    assert refusal.startswith("UsageError: ray backend unavailable: cannot connect to Ray at"), result.stderr
    assert all(line.startswith("[jupyter-exec] ") for line in ours), result.stderr
    assert not ray_lines(result.stdout + result.stderr)
    return refusal


class Silent:
    """A TCP port that accepts connections and never says a word (a host that swallows them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"


class NotRay:
    """An HTTP server: something answers, but not a Ray cluster's GCS."""

    def __init__(self) -> None:
        self.server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_port}"


def test_addresses_without_a_cluster_fail_fast_in_one_line(cluster, kernel):
    nothing = refused_in_one_line(kernel, f"%%rayrun --address 127.0.0.1:{free_port()}\n1")
    assert "nothing listens there (connection refused)" in nothing and "ray start --head" in nothing
    http = NotRay()
    wrong = refused_in_one_line(kernel, f"%%rayrun --address {http.address}\n1")
    assert "not a Ray cluster's GCS" in wrong and "6379" in wrong
    http.server.shutdown()
    dns = refused_in_one_line(kernel, "%%rayrun --address no-such-head.invalid:6379\n1")
    assert "no-such-head.invalid does not resolve" in dns
    silent = Silent()
    kernel.run("%config ExecConfig.ray_connect_timeout = '3s'", check=True)
    try:
        quiet = refused_in_one_line(kernel, f"%%rayrun --address {silent.address}\n1", within=8)
    finally:
        kernel.run("%config ExecConfig.ray_connect_timeout = '10s'", check=True)
    assert "no answer within 3 s" in quiet and "ExecConfig.ray_connect_timeout" in quiet
    assert kernel.last_run()["status"] == "failed"  # recorded, as every run is
    good = kernel.run("%%rayrun\nimport ray\nray.get_runtime_context().gcs_address", timeout=120, check=True)
    assert good.result_text.endswith(f":{cluster.port}'")  # nothing was left half-connected
    assert not ray_lines(good.stdout + good.stderr)


def test_a_cluster_of_another_ray_version_is_named(cluster, kernel, tmp_path):
    """The cluster's own record of its versions says another Ray: the kernel must refuse it."""
    other = jupyter_kernel(tmp_path, **TOKEN_ENV)
    metadata = cluster_metadata(cluster.address)
    try:
        cluster_metadata(cluster.address, replace={**metadata, "ray_version": "2.0.0"})
        message = refused_in_one_line(other, f"%%rayrun --address {cluster.address}\n1")
    finally:
        cluster_metadata(cluster.address, replace=metadata)
        other.shutdown()
    assert "the cluster runs Ray 2.0.0" in message and "pip install ray==2.0.0" in message


def test_token_missing_is_named_and_interrupt_works_while_connecting(cluster, tmp_path):
    bare = jupyter_kernel(tmp_path)  # no RAY_AUTH_MODE
    try:
        message = refused_in_one_line(bare, f"%%rayrun --address {cluster.address}\n1")
        assert "token authentication" in message and "RAY_AUTH_MODE=token" in message
        silent = Silent()
        bare.run("%config ExecConfig.ray_connect_timeout = '60s'", check=True)
        msg_id = bare.client.execute(f"%%rayrun --address {silent.address}\n1")
        time.sleep(2)
        bare.km.interrupt_kernel()
        interrupted = time.monotonic()
        reply = bare.collect(msg_id, timeout=30)
        assert reply.error["ename"] == "KeyboardInterrupt" and time.monotonic() - interrupted < 10
        assert bare.run("1 + 1", check=True).result_text == "2"  # the kernel is fine
        again = refused_in_one_line(bare, f"%%rayrun --address {cluster.address}\n1")
        assert "RAY_AUTH_MODE=token" in again  # a new attempt, not a half-made connection
    finally:
        bare.shutdown()


def _details(kernel: Kernel) -> dict:
    return json.loads(kernel.records().get(kernel.last_run()["id"])["details"] or "{}")


VISIBLE = "%%rayrun {options}\nimport os\nos.environ.get('CUDA_VISIBLE_DEVICES', '')"


def test_one_gpu_cell_sees_exactly_one_gpu(kernel):
    cell = kernel.run(VISIBLE.format(options="--num-gpus 1"), timeout=120, check=True)
    visible = eval(cell.result_text)
    assert visible in ("0", "1")
    assert _details(kernel)["gpu_ids"] == [visible]  # recorded with the run
    assert kernel.last_run()["status"] == "succeeded"


def test_two_gpus_and_no_gpu(kernel):
    both = kernel.run(VISIBLE.format(options="--num-gpus 2"), check=True)
    assert sorted(eval(both.result_text).split(",")) == ["0", "1"]
    none = kernel.run(VISIBLE.format(options=""), check=True)
    assert none.result_text == "''"  # a CPU cell is given no GPU


def test_gpu_id_pins_the_device(kernel):
    cell = kernel.run(VISIBLE.format(options="--gpu-id 1"), check=True)
    assert cell.result_text == "'1'"
    assert _details(kernel)["cuda_visible_devices"] == "1"


def test_more_gpus_than_any_node_fails_at_once_naming_the_gpus(kernel):
    started = time.monotonic()
    cell = kernel.run(VISIBLE.format(options="--num-gpus 3"))
    assert time.monotonic() - started < 10
    message = cell.stderr  # IPython shows a UsageError as one line, no traceback
    assert message.startswith("UsageError:")
    assert "3 GPU" in message and "2 GPU" in message  # what was asked, and what the node has


def test_disconnecting_leaves_the_cluster_running(cluster, kernel, tmp_path):
    other = Kernel(tmp_path / "data", tmp_path, env={"JX_RAY_ADDRESS": cluster.address, **TOKEN_ENV})
    other.run("%%rayrun\n1", timeout=120, check=True)
    other.shutdown()
    time.sleep(1)
    assert cluster.head.alive()
    assert kernel.run("%%rayrun --num-gpus 1\n'still up'", check=True).result_text == "'still up'"


def test_ray_log_lines_go_to_the_run_log_not_the_cell(cluster, kernel):
    kernel.run("%%rayrun\n1", timeout=120, check=True)
    fake = "[2026-01-01 10:00:00,000 E 1 2] core_worker.cc:1: Failed to push error to driver"
    shown = kernel.run(
        f"import os, time\nos.write(2, b'{fake}\\n')\nos.write(2, b'the user wrote this\\n')\ntime.sleep(1)"
    )
    assert shown.stderr == "the user wrote this\n"  # the cell's own writes to fd 2 still reach it
    kernel.run(
        "import threading, time\n"
        f"threading.Thread(target=lambda: (time.sleep(1.5), os.write(2, b'{fake}\\n'))).start()",
        check=True,
    )
    during = kernel.run("%%rayrun\nimport time\ntime.sleep(4)\nprint('slept')", check=True)
    assert fake not in during.stderr and during.stdout == "slept\n"
    assert fake in kernel.last_log()  # Ray's line went to the log of the run that was going


def test_a_cell_ending_its_worker_fails_naming_the_exit(kernel):
    cell = kernel.run("%%rayrun\nimport os\nprint('last words', flush=True)\nos._exit(3)", timeout=60)
    assert cell.error["ename"] == "NodeFailedError"
    assert "exit code 3" in cell.error["evalue"] and "os._exit" in cell.error["evalue"]
    assert "last words" in cell.stdout and not ray_lines(cell.stdout + cell.stderr)
    run = kernel.last_run()
    assert (run["status"], run["exit_code"]) == ("failed", 3)
    assert "last words" in kernel.last_log()  # the log is kept
    assert kernel.run("%%rayrun\n'fine'", check=True).result_text == "'fine'"


def test_retries_run_the_cell_again_on_the_other_node_when_its_node_is_killed(cluster, kernel):
    msg_id = kernel.start(LONG_CELL.format(options="--resources second=1 --retries 1", seconds=8), "started on")
    first = _node_of_the_run(kernel)
    cluster.kill_node(first)
    cell = kernel.collect(msg_id, timeout=120)
    assert cell.error is None, cell.error
    assert cell.result_text == "'finished'" and kernel.last_run()["status"] == "succeeded"
    assert not ray_lines(cell.stdout + cell.stderr)  # "Task failed. There are 1 retries remaining" is Ray's
    assert json.loads(kernel.records().get(kernel.last_run()["id"])["details"])["node_id"] != first  # ran again


def test_a_node_killed_under_a_run_fails_it_naming_the_node(cluster, kernel):
    (node_id,) = wait_for_nodes(cluster.address, "second", 1)  # the one the last test left
    msg_id = kernel.start(LONG_CELL.format(options="--resources second=1", seconds=60), "started on")
    assert _node_of_the_run(kernel) == node_id
    cluster.kill_node(node_id)
    killed = time.monotonic()
    cell = kernel.collect(msg_id, timeout=60)
    assert time.monotonic() - killed <= 30
    assert cell.error["ename"] == "NodeFailedError", cell.error
    assert f"node {node_id[:12]}" in cell.error["evalue"] and "--retries" in cell.error["evalue"]
    assert kernel.last_run()["status"] == "failed" and not ray_lines(cell.stdout + cell.stderr)
    assert "started on" in kernel.last_log()  # the log is kept


def _node_of_the_run(kernel: Kernel) -> str:
    return kernel.last_log().split("started on ", 1)[1].split()[0]


def test_map_keeps_the_results_of_items_whose_worker_lived(kernel):
    cell = kernel.run(
        "import jupyter_exec, os\n"
        "def risky(x):\n"
        "    if x == 5:\n"
        "        os._exit(1)\n"
        "    return x * 10\n"
        "try:\n"
        "    jupyter_exec.map(risky, range(8), backend='ray', batch_size=1, progress=False)\n"
        "except jupyter_exec.MapError as error:\n"
        "    print(error.results)\n"
        "    print(sorted(error.errors), type(error.errors[5]).__name__)\n"
        "    print(error.errors[5])",
        timeout=120,
        check=True,
    )
    results, failed, message = cell.stdout.splitlines()[:3]
    assert results == "[0, 10, 20, 30, 40, None, 60, 70]"
    assert failed == "[5] NodeFailedError"
    assert "the map task for items 5..5" in message, message


def test_the_head_stopped_under_a_run_ends_it_and_the_next_run_reconnects(cluster, kernel):
    msg_id = kernel.start(LONG_CELL.format(options="--resources head=1", seconds=60), "started on")
    for node in cluster.nodes:
        node.stop()
    cluster.head.kill()
    stopped = time.monotonic()
    cell = kernel.collect(msg_id, timeout=60)
    assert time.monotonic() - stopped <= 30
    assert cell.error["ename"] == "NodeFailedError", cell.error
    assert f":{cluster.port} went away" in cell.error["evalue"]
    assert kernel.last_run()["status"] == "failed" and not ray_lines(cell.stdout + cell.stderr)
    assert kernel.run("1 + 1", check=True).result_text == "2"
    refused_in_one_line(kernel, "%%rayrun\n1")  # no cluster there now: a clear refusal, not a hang
    cluster.start_head()
    cell = kernel.run("%%rayrun --resources head=1\n'back'", timeout=120)
    assert cell.error is None, cell.error
    assert cell.result_text == "'back'" and "connecting to Ray at" in cell.stdout, cell.stdout
