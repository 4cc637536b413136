"""Admission in one place: a cell, a map and a run through a broker are admitted the same way
(the kernel's defaults where the backend keeps them, the administrator's ceilings over them, a
limit the backend cannot keep refused in its words), and each records what it admitted."""

from __future__ import annotations

import json

import pytest
from conftest import require

import jupyter_exec
from jupyter_exec.admission import AdmittedSpec, BackendFacts, admit
from jupyter_exec.backends.base import Submission
from jupyter_exec.backends.broker.client import _request, brokered
from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.process import SeccompBackend
from jupyter_exec.broker.ops import handle
from jupyter_exec.broker.service import Broker, Identity, Settings
from jupyter_exec.config import ExecConfig
from jupyter_exec.current import set_current_manager
from jupyter_exec.envs import EnvSpec
from jupyter_exec.errors import BackendUnavailableError, PolicyError, SpecError
from jupyter_exec.manager import Manager
from jupyter_exec.output import ConsoleSink
from jupyter_exec.policy import Policy, load_policy
from jupyter_exec.spec import Limits, RunSpec

# The same file is the kernel's policy (JX_POLICY) and the broker's: its top-level keys are a policy.
POLICY = "memory: 1g\ntimeout: 1m\ncpus: 1\npids: 100\nimages: ['jupyter-exec/*']\n"
DEFAULTS = {"mem": "2g", "timeout": "10m", "pids": "256", "fsize": "1g", "shm": "32m", "cpus": "", "cpu_time": ""}
# What each path must admit: the asked memory, the defaults the container keeps, lowered to the ceilings.
ADMITTED = {
    "memory": 512 << 20,
    "cpus": 1.0,
    "timeout": 60.0,
    "cpu_time": None,
    "pids": 100,
    "fsize": 1 << 30,
    "network": False,
    "gpus": None,
    "shm": 32 << 20,
}


def _recorded(manager: Manager, newest: int) -> list[dict]:
    """The specs of the ``newest`` runs, as recorded (newest first)."""
    return [json.loads(manager.records.get(row["id"])["spec"]) for row in manager.records.runs(newest)]


class _Channel:
    """Where an in-process broker's answer to one request goes."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def send(self, event: dict) -> None:
        self.events.append(event)

    def gone(self) -> bool:
        return False


@pytest.fixture
def kernel_side(tmp_path):
    """A Manager under POLICY with DEFAULTS, current for ``jupyter_exec.map``."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    manager = Manager(ExecConfig(data_dir=str(tmp_path / "kernel"), pool_size=0, **DEFAULTS))
    manager.policy = load_policy((), {"JX_POLICY": str(path)})
    set_current_manager(manager)
    yield manager, path
    set_current_manager(None)
    manager.shutdown()


def test_a_cell_a_map_and_a_broker_admit_a_request_the_same_way(kernel_side, tmp_path):
    availability = ContainerBackend.availability()
    require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    manager, path = kernel_side
    spec = RunSpec(backend="docker", limits=Limits.parse(memory="512m"), env={"SEED": "1"}, name="same")

    _, admitted = manager.admitted(spec)
    assert isinstance(admitted, AdmittedSpec) and admitted.limits.as_dict() == ADMITTED
    assert (admitted.backend, admitted.image) == ("container", "jupyter-exec/base:latest")
    assert manager.admitted(admitted)[1] is admitted  # admitted once: a map's batch is not admitted again

    assert manager.run("import os\nos.environ['SEED']", spec).value == "1"
    cell = _recorded(manager, 1)[0]
    assert cell == admitted.describe()

    assert jupyter_exec.map(abs, [-1, -2], backend="docker", limits={"memory": "512m"}, env={"SEED": "1"}) == [1, 2]
    mapped = _recorded(manager, 3)  # its two batches, and the map
    assert [m["limits"] for m in mapped] == [ADMITTED] * 3 and mapped[2]["name"] is None

    # Through a broker: the kernel checks its own policy and sends its defaults apart; the broker
    # admits the request again under its file, as the Manager did.
    config = manager.config
    brokered_facts = BackendFacts.of(brokered("unix:///nowhere.sock")(config))
    asked = admit(spec, brokered_facts, manager.policy, config.default_limits())
    assert asked.limits == Limits.parse(memory="512m")  # nothing merged or lowered in the kernel
    submission = Submission(0, "kernel", "1", asked, None, None, ConsoleSink(), None)
    broker = Broker(Settings(tmp_path / "broker", policy=path), ExecConfig(data_dir=str(tmp_path / "b"), pool_size=0))
    try:
        channel = _Channel()
        handle(broker, Identity("alice"), {"v": 1, **_request(submission, config.default_limits())}, channel)
        end = channel.events[-1]
        assert end["t"] == "end" and end["status"] == "succeeded", channel.events
        shown = _Channel()
        handle(broker, Identity("alice"), {"v": 1, "op": "show", "run": channel.events[0]["run"]}, shown)
        row = shown.events[0]["run"]
    finally:
        broker.close()
    assert json.loads(row["spec"])["limits"] == ADMITTED and row["image"] == admitted.image


def test_what_a_backend_cannot_keep_is_refused_in_its_words(kernel_side):
    manager, _ = kernel_side
    availability = SeccompBackend.availability()
    require(availability.ok, f"seccomp backend: {availability.reason} — {availability.fix}")
    with pytest.raises(BackendUnavailableError) as refused:
        manager.run("print('ran')", RunSpec(backend="seccomp", limits=Limits.parse(gpus="1")))
    assert str(refused.value).startswith("seccomp backend unavailable: --gpus 1: a local process has no GPU placement")
    with pytest.raises(SpecError, match=r"^image python:3\.12: only the container backend runs images"):
        manager.run("1", RunSpec(backend="seccomp", runtime_env=EnvSpec(image="python:3.12")))
    with pytest.raises(PolicyError, match=r"^--mem 2g is above the administrator's ceiling of 1g"):
        manager.run("1", RunSpec(backend="seccomp", limits=Limits.parse(memory="2g")))
    assert manager.records.runs(10) == []  # refused before anything was recorded


def test_admission_reads_only_its_arguments():
    """No backend is made or asked: a description of one is enough (what the broker has of a kernel's)."""
    facts = BackendFacts(
        "pretend",
        frozenset({"memory", "timeout"}),
        None,
        lambda spec, policy: None,
        lambda limits, unenforced: (f"cannot keep {', '.join(unenforced)}", "drop them"),
    )
    defaults = Limits.parse(memory="2g", timeout="10m", pids="256")
    admitted = admit(RunSpec(env={"A": "1"}), facts, Policy(), defaults)
    assert admitted.limits == Limits.parse(memory="2g", timeout="10m") and admitted.backend == "pretend"
    with pytest.raises(BackendUnavailableError, match="pretend backend unavailable: cannot keep pids, fsize"):
        admit(RunSpec(limits=Limits.parse(pids="10", fsize="1m")), facts, Policy(), defaults)
    env = EnvSpec(env_vars={"A": "env", "B": "env"})
    assert admit(RunSpec(env={"A": "1"}, runtime_env=env), facts, Policy(), defaults).env == {"A": "1", "B": "env"}


def test_map_keywords_stay_the_public_ones(kernel_side):
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_paralel'"):
        jupyter_exec.map(abs, [1], max_paralel=2)
    with pytest.raises(SpecError, match="max_parallel must be a whole number"):
        jupyter_exec.map(abs, [1], backend="local", max_parallel=0)
    assert jupyter_exec.map(abs, [-3], backend="local", max_parallel=1, batch_size=1, progress=False) == [3]
