"""``%%rayrun`` and ``jupyter_exec.map`` through a real kernel, on a real local Ray.

One Ray for the whole session: the first ``%%rayrun`` in ``ray_kernel`` starts the
embedded local Ray (the progress message is checked); a second kernel connects to it by
address and must neither start nor stop it. In CI (JX_REQUIRE_ALL=1) a missing Ray fails.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import time

import pytest
from conftest import Kernel, require, require_gpu
from values import round_trip

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="session")
def ray_kernel(tmp_path_factory):
    require(importlib.util.find_spec("ray") is not None, "Ray is not installed (pip install -e '.[ray]')")
    kernel = Kernel(
        tmp_path_factory.mktemp("jx-ray-data"), tmp_path_factory.mktemp("ray-notebook"), env={"JX_RAY_ADDRESS": ""}
    )
    started = time.monotonic()
    cell = kernel.run("%%rayrun\n40 + 2", timeout=180, check=True)
    kernel.start_seconds = time.monotonic() - started
    kernel.start_message = cell.stdout  # information, not an error
    assert "[jupyter-exec]" not in cell.stderr
    assert cell.result_text == "42"
    yield kernel
    kernel.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_kernel) -> str:
    return ray_kernel.eval(
        "__import__('jupyter_exec.backends.raycluster.connection').backends.raycluster.connection.connection().address"
    )


def _details(kernel: Kernel) -> dict:
    return json.loads(kernel.records().get(kernel.last_run()["id"])["details"] or "{}")


def test_embedded_ray_starts_once_with_a_message(ray_kernel):
    assert "starting a local Ray for this kernel" in ray_kernel.start_message
    assert "local Ray ready" in ray_kernel.start_message
    again = ray_kernel.run("%%rayrun\n1", check=True)
    assert "starting" not in again.stdout + again.stderr  # reused, not started again


def test_last_value_out_and_record(ray_kernel):
    ray_kernel.run("base = 10", check=True)
    cell = ray_kernel.run(
        "%%rayrun --in base --out total,frame --name ray-sum\n"
        "import pandas as pd\n"
        "total = sum(range(base))\n"
        "frame = pd.DataFrame({'a': [1, 2]})\n"
        "print('printed')\n"
        "{'k': (1, 2.5)}",
        check=True,
    )
    assert cell.stdout == "printed\n"
    assert cell.result_text == "{'k': (1, 2.5)}"
    assert ray_kernel.eval("total") == 45
    assert ray_kernel.eval("frame.to_dict('list')") == {"a": [1, 2]}
    run = ray_kernel.last_run()
    assert (run["backend"], run["isolation"], run["status"], run["name"]) == ("ray", "ray", "succeeded", "ray-sum")
    details = _details(ray_kernel)
    assert len(details["node_id"]) == 56 and details["gpu_ids"] == []
    listed = ray_kernel.run(f"df = %jx runs\nprint(df.loc[{run['id']}, 'node'], list(df.columns[:5]))", check=True)
    assert listed.stdout == f"{details['node_id'][:12]} ['name', 'status', 'backend', 'node', 'started']\n"


def test_values_come_back_as_data_only(ray_kernel):
    cell = ray_kernel.run("%%rayrun --out thing\nclass Thing: pass\nthing = Thing()")
    assert cell.error["ename"] == "TransferError" and "--trust" in cell.error["evalue"]


def test_every_kind_of_value_crosses_to_ray_and_back(ray_kernel):
    versions, _ = round_trip(ray_kernel, "%%rayrun")
    assert versions == ray_kernel.eval("f'{np.__version__} {pd.__version__}'")  # the workers run the kernel's venv


def test_exception_with_remote_traceback(ray_kernel):
    cell = ray_kernel.run("%%rayrun\ndef inner():\n    return 1 / 0\ninner()")
    assert cell.error["ename"] == "ZeroDivisionError"
    traceback = "\n".join(cell.error["traceback"])
    assert "inner()" in traceback and "return 1 / 0" in traceback and "ray_task" not in traceback
    assert ray_kernel.last_run()["status"] == "failed"


def test_worker_death_is_a_node_failure_naming_the_exit(ray_kernel):
    cell = ray_kernel.run("%%rayrun\nimport os\nos._exit(3)")
    assert cell.error["ename"] == "NodeFailedError" and "Ray worker" in cell.error["evalue"]
    assert "exit code 3" in cell.error["evalue"]
    assert (ray_kernel.last_run()["status"], ray_kernel.last_run()["exit_code"]) == ("failed", 3)
    assert ray_kernel.run("%%rayrun\n'fine'", check=True).result_text == "'fine'"


def test_output_streams_live(ray_kernel):
    cell = ray_kernel.run(
        "%%rayrun\nimport sys, time\nfor i in range(6):\n    print('tick', i, flush=True)\n"
        "    time.sleep(0.3)\nprint('warn', file=sys.stderr)"
    )
    assert cell.stdout.splitlines() == [f"tick {i}" for i in range(6)]
    assert cell.stderr == "warn\n"
    assert cell.finished_at - cell.stream_times[0] > 1.0  # the first line came long before the end
    log = open(ray_kernel.last_run()["log_path"]).read()
    assert "tick 5" in log


def test_output_survives_the_relay_being_killed(ray_kernel):
    """The relay actor that carries output is one process of the cluster's like any other: if
    it is killed, the runs after the one that finds it gone have their output again."""
    ray_kernel.run(
        "import os, signal, ray\n"
        "from jupyter_exec.backends.raycluster.connection import connection\n"
        "(relay,) = [a for a in ray._private.state.actors().values() if a['Name'] == connection().relay_key[0]]\n"
        "os.kill(relay['Pid'], signal.SIGKILL)",
        check=True,
    )
    cell = "%%rayrun\nimport time\nprint('after the relay', flush=True)\ntime.sleep(0.5)"
    ray_kernel.run(cell, check=True)  # the run that finds the relay gone (its output may be lost)
    assert ray_kernel.run(cell, check=True).stdout == "after the relay\n"


def test_short_cells_never_poll_for_output(ray_kernel):
    """A waiting long poll slows every Ray call of the kernel, so a short cell makes none,
    and the output of a short cell that prints still arrives whole and in order."""
    pulls = "__import__('jupyter_exec.backends.raycluster.connection', fromlist=['x']).connection().output.pulls"
    before = ray_kernel.eval(pulls)
    for _ in range(5):
        ray_kernel.run("%%rayrun\nx = 1", check=True)
    assert ray_kernel.eval(pulls) == before
    cell = ray_kernel.run("%%rayrun\nfor i in range(3):\n    print('line', i)\n'done'", check=True)
    assert cell.stdout.splitlines() == ["line 0", "line 1", "line 2"]
    assert cell.result_text == "'done'"


def test_output_flood_is_capped_and_logged(ray_kernel):
    cell = ray_kernel.run(
        "%%rayrun\nimport sys\nline = 'x' * 999 + '\\n'\nfor _ in range(20_000):\n    sys.stdout.write(line)",
        timeout=120,
    )
    run = ray_kernel.last_run()
    assert run["status"] == "succeeded"
    assert len(cell.stdout) < 1.1 * 2**20 and "output truncated at 1,048,576 bytes" in cell.stdout
    with open(run["log_path"], "rb") as log:  # all of it, then how the run ended
        log.seek(20_000_000 - 1000)
        end = log.read()
    assert end.startswith(b"x" * 999 + b"\n") and end[1000:].startswith(
        f"[jupyter-exec] run {run['id']} succeeded".encode()
    )


def test_env_vars_reach_the_task(ray_kernel):
    cell = ray_kernel.run("%%rayrun --env JX_GREETING=hello\nimport os\nos.environ['JX_GREETING']", check=True)
    assert cell.result_text == "'hello'"


def test_interrupt_cancels_the_task(ray_kernel):
    msg_id = ray_kernel.client.execute("%%rayrun\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    deadline = time.monotonic() + 30
    while ray_kernel.records().runs(1)[0]["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    ray_kernel.km.interrupt_kernel()
    interrupted = time.monotonic()
    reply = ray_kernel.client.get_shell_msg(timeout=30)
    while reply["parent_header"]["msg_id"] != msg_id:
        reply = ray_kernel.client.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted < 15
    assert ray_kernel.last_run()["status"] == "cancelled"


def test_timeout_cancels_the_task(ray_kernel):
    started = time.monotonic()
    cell = ray_kernel.run("%%rayrun --timeout 2\nimport time\ntime.sleep(60)")
    assert cell.error["ename"] == "TaskTimeoutError" and "2 s" in cell.error["evalue"]
    assert time.monotonic() - started < 20
    assert ray_kernel.last_run()["status"] == "timeout"


def test_infeasible_gpu_request_fails_at_once(ray_kernel):
    started = time.monotonic()
    cell = ray_kernel.run("%%rayrun --num-gpus 1\n1")
    assert time.monotonic() - started < 10
    message = cell.stderr  # IPython shows a UsageError as one line, no traceback
    assert message.startswith("UsageError: no node of the Ray cluster can ever run this task: it asks for")
    assert "1 GPU" in message and "CPU" in message and "backend unavailable" not in message  # Ray itself works
    assert "--wait-for-resources" in message
    assert ray_kernel.last_run()["status"] == "failed"
    waiting = ray_kernel.run("%%rayrun --num-gpus 1 --wait-for-resources --timeout 2\n1")  # queued, then cancelled
    assert waiting.error["ename"] == "TaskTimeoutError"
    assert ray_kernel.last_run()["status"] == "timeout"


def test_node_affinity_to_the_local_node(ray_kernel):
    node_id = ray_kernel.eval("__import__('ray').get_runtime_context().get_node_id()")
    for node in (node_id, node_id[:12], "local"):
        cell = ray_kernel.run(
            f"%%rayrun --node {node}\nimport ray\nray.get_runtime_context().get_node_id()", check=True
        )
        assert cell.result_text == repr(node_id)
    assert _details(ray_kernel)["node_affinity"] == node_id
    soft = ray_kernel.run(f"%%rayrun --node {node_id} --soft\n1", check=True)
    assert soft.result_text == "1"
    missing = ray_kernel.run("%%rayrun --node 10.255.255.1\n1")
    assert missing.stderr.startswith("UsageError:") and "no live node" in missing.stderr


def test_available_resources_come_from_the_live_nodes(ray_kernel):
    resources = ray_kernel.eval(
        "get_ipython().find_magic('rayrun', 'cell').__self__.manager.backend('ray').get_available_resources()"
    )
    (node,) = resources["nodes"]
    assert node["resources"]["CPU"] >= 1 and node["resources"]["memory"] > 0
    assert resources["address"] == ray_kernel.eval(
        "__import__('jupyter_exec.backends.raycluster.connection').backends.raycluster.connection.connection().address"
    )
    shown = ray_kernel.run("%jx resources", check=True).stdout
    assert "ray      ray        available" in shown
    ray = shown.split("ray      ray        available", 1)[1].split("\ncontainer", 1)[0]
    available = next(line for line in ray.splitlines() if line.strip().startswith("available: "))
    assert f"address: {resources['address']}\n" in ray and "CPU " in available, ray  # no quotes, no repr
    assert "node:" not in ray and "__internal_head__" not in ray  # Ray's own keys are no help


def test_limits_ray_cannot_enforce_are_refused(ray_kernel):
    cell = ray_kernel.run(
        "from jupyter_exec import RunSpec, Limits\n"
        "get_ipython().find_magic('rayrun', 'cell').__self__.manager.run("
        "'1', RunSpec(backend='ray', limits=Limits.parse(pids=10)))"
    )
    assert cell.error["ename"] == "BackendUnavailableError" and "pids" in cell.error["evalue"]


def test_map_fans_out_in_order(ray_kernel):
    cell = ray_kernel.run(
        "import jupyter_exec\n"
        "squares = jupyter_exec.map(lambda x: x * x, range(200), backend='ray', max_parallel=2)\n"
        "from_code = jupyter_exec.map('item + 1', [1, 2, 3], backend='ray')\n"
        "squares == [x * x for x in range(200)] and from_code == [2, 3, 4]",
        check=True,
    )
    assert cell.result_text == "True"
    assert "map: 200/200 done" in cell.stderr
    failing = ray_kernel.run(
        "try:\n    jupyter_exec.map(lambda x: 1 // (x - 7), range(10), backend='ray', progress=False)\n"
        "except jupyter_exec.MapError as error:\n"
        "    print(error.results[:7], error.results[8:], list(error.errors), type(error.errors[7]).__name__)",
        check=True,
    )  # as on every backend: the other items' results survive the one that raised
    assert failing.stdout == "[-1, -1, -1, -1, -1, -1, -1] [1, 0] [7] ZeroDivisionError\n", failing.stdout
    too_big = ray_kernel.run("jupyter_exec.map(abs, range(3), backend='ray', num_gpus=1)")  # nothing could run it
    assert too_big.error["ename"] == "SpecError" and "can ever run this task" in too_big.error["evalue"]


def test_explore_on_ray_records_a_child_whose_worker_died_and_goes_on(ray_kernel):
    cell = ray_kernel.run(
        "import itertools, jupyter_exec\n"
        "proposals = itertools.count()\n"
        "def propose(parent):\n"
        "    n = next(proposals)\n"
        "    return ('import os\\nos._exit(3)' if n == 1 else f'{{\"score\": {n}}}'), {'n': n}\n"
        "tree = jupyter_exec.explore(propose, budget=4, backend='ray', trace='ray-faults', progress=False)\n"
        "print(sorted((str(n.status), n.error or '') for n in tree.nodes.values()))",
        timeout=180,
        check=True,
    )
    (failed, *succeeded) = sorted(eval(cell.stdout))
    assert failed[0] == "failed" and "exit code 3" in failed[1]
    assert [status for status, _ in succeeded] == ["succeeded"] * 3


def test_second_kernel_connects_by_address_without_starting_or_stopping(ray_kernel, ray_address, tmp_path):
    # Ray sends its auth token to an explicit address only when told to (RAY_AUTH_MODE=token)
    other = Kernel(tmp_path / "data", tmp_path, env={"JX_RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "token"})
    try:
        cell = other.run("%%rayrun\nimport ray\nray.get_runtime_context().gcs_address", timeout=120, check=True)
        assert cell.result_text == repr(ray_address)  # ExecConfig.ray_address, from JX_RAY_ADDRESS
        assert "connecting to Ray at" in cell.stdout and "starting a local Ray" not in cell.stdout
        again = other.run(f"%%rayrun --address {ray_address}\n'same cluster'", check=True)
        assert again.result_text == "'same cluster'" and "connecting" not in again.stdout
        assert (
            other.eval(
                "__import__('jupyter_exec.backends.raycluster.connection').backends.raycluster.connection.connection().started_cluster"
            )
            is False
        )
    finally:
        other.shutdown()
    time.sleep(1)
    after = ray_kernel.run("%%rayrun\n'still up'", check=True)  # the first kernel's Ray was not stopped
    assert after.result_text == "'still up'"


# Inside a run: the GPUs nvidia-smi can reach among those it was given (CUDA_VISIBLE_DEVICES: nvidia-smi
# itself lists every GPU of the machine), by UUID.
GPUS_REACHED = (
    "import os, subprocess\n"
    "given = os.environ.get('CUDA_VISIBLE_DEVICES', '')\n"
    "asked = ['nvidia-smi', '--query-gpu=uuid', '--format=csv,noheader'] + (['--id=' + given] if given else [])\n"
    "subprocess.run(asked, capture_output=True, text=True, check=True).stdout.split()"
)


@pytest.mark.gpu
def test_one_gpu_is_reached_with_nvidia_smi(ray_kernel):
    """Where nvidia-smi lists a GPU, a --num-gpus 1 task gets exactly one and reaches it (fails,
    never skips, if it cannot); where it lists none, this is the one test that skips."""
    listed = require_gpu()
    cell = ray_kernel.run(f"%%rayrun --num-gpus 1\n{GPUS_REACHED}", check=True)
    reached = ast.literal_eval(cell.result_text)
    assert len(reached) == 1 and any(reached[0] in line for line in listed), (reached, listed)
    assert len(_details(ray_kernel)["gpu_ids"]) == 1


def test_an_env_image_is_refused_not_ignored(ray_kernel):
    (ray_kernel.cwd / "image-env.yaml").write_text("image: jupyter-exec/datascience:latest\n")
    message = ray_kernel.refused("%%rayrun --env-spec image-env.yaml\nprint('ran')")
    assert "only the container backend runs images" in message and "on ray" in message


def test_runtime_env_becomes_rays_own(ray_kernel):
    """The env options %%sandbox takes reach Ray's runtime_env: files shipped, env vars set."""
    project = ray_kernel.cwd / "rayproject"
    (project / "helpers").mkdir(parents=True)
    (project / "config.txt").write_text("shipped by ray")
    (project / "helpers" / "__init__.py").write_text("def greet():\n    return 'hi from py_modules'\n")
    (ray_kernel.cwd / "ray-env.yaml").write_text("env_vars: {STAGE: ray}\n")
    cell = ray_kernel.run(
        "%%rayrun --working-dir rayproject --py-modules rayproject/helpers --env-spec ray-env.yaml\n"
        "import os, helpers\n(open('config.txt').read(), helpers.greet(), os.environ['STAGE'])",
        timeout=180,
        check=True,
    )
    assert cell.result_text == "('shipped by ray', 'hi from py_modules', 'ray')"
    spec = json.loads(ray_kernel.records().get(ray_kernel.last_run()["id"])["spec"])
    assert spec["runtime_env"]["working_dir"].endswith("rayproject")


def test_the_embedded_ray_lost_is_started_anew_and_stops_promptly_with_the_kernel(tmp_path):
    """If the kernel's local Ray goes (its GCS killed), the run on it fails in seconds and the
    next run starts a new one. The kernel stops its Ray when told to shut down, before
    ipykernel SIGTERMs its process group: the kernel exits in seconds, not at jupyter_client's
    kill, and no Ray process stays."""
    import psutil

    def ray_processes() -> list[psutil.Process]:
        children = psutil.Process(kernel.pid).children(recursive=True)
        return [p for p in children if p.name() in ("gcs_server", "raylet")]

    kernel = Kernel(tmp_path / "data", tmp_path, env={"JX_RAY_ADDRESS": ""})
    try:
        kernel.run("%%rayrun\n1", timeout=180, check=True)
        (gcs,) = [p for p in ray_processes() if p.name() == "gcs_server"]
        msg_id = kernel.start("%%rayrun\nimport time\nprint('started', flush=True)\ntime.sleep(60)", "started")
        gcs.kill()
        killed = time.monotonic()
        lost = kernel.collect(msg_id, timeout=60)
        assert time.monotonic() - killed <= 30
        assert lost.error["ename"] == "NodeFailedError", lost.error
        assert "this kernel's local Ray" in lost.error["evalue"] and "went away" in lost.error["evalue"]
        assert kernel.last_run()["status"] == "failed"
        again = kernel.run("%%rayrun\n'a new local Ray'", timeout=180, check=True)
        assert again.result_text == "'a new local Ray'" and "starting a local Ray" in again.stdout
        running = ray_processes()
        assert len(running) == 2 and gcs.pid not in [p.pid for p in running]  # the old one's are gone
    finally:
        started = time.monotonic()
        kernel.shutdown()
        took = time.monotonic() - started
    assert took < 4.5, f"shutdown took {took:.1f} s"  # jupyter_client kills a kernel at 5 s
    psutil.wait_procs(running, timeout=10)
    assert not [p for p in running if p.is_running()]
