"""``%%rayrun``'s options and what the Ray backend refuses, without a cluster."""

from __future__ import annotations

import pytest

from jupyter_exec.admission import BackendFacts, admit
from jupyter_exec.backends.raycluster import RayBackend, RayOptions
from jupyter_exec.backends.raycluster.connection import ray_runtime_env
from jupyter_exec.config import ExecConfig
from jupyter_exec.envs import EnvSpec
from jupyter_exec.errors import BackendUnavailableError, SpecError
from jupyter_exec.policy import Policy
from jupyter_exec.spec import Limits, RunSpec


def test_defaults_reserve_one_cpu_and_never_retry():
    options = RayOptions.parse()
    assert options.resources() == {"CPU": 1.0}
    assert options.retries == 0 and options.address is None and not options.wait_for_resources


def test_resources_and_gpu_ids():
    options = RayOptions.parse(num_cpus="0.5", memory="2g", gpu_ids="1, 3")
    assert options.resources() == {"CPU": 0.5, "GPU": 2.0, "memory": float(2 * 2**30)}
    assert options.gpu_ids == ("1", "3")
    assert RunSpec(backend="ray", placement=options).describe()["placement"]["gpu_ids"] == ("1", "3")


def test_custom_resources_are_reserved_and_passed_to_ray():
    options = RayOptions.parse(custom="second=1, disk=0.5")
    assert options.custom == (("disk", 0.5), ("second", 1.0))
    assert options.resources() == {"CPU": 1.0, "disk": 0.5, "second": 1.0}  # the feasibility check sees them
    assert options.task_options(None)["resources"] == {"disk": 0.5, "second": 1.0}
    assert "resources" not in RayOptions.parse().task_options(None)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"num_cpus": "many"}, "--num-cpus"),
        ({"num_gpus": "-1"}, "--num-gpus"),
        ({"memory": "lots"}, "--memory"),
        ({"retries": "1.5"}, "--retries"),
        ({"gpu_ids": "0,1", "num_gpus": "1"}, "--gpu-id"),
        ({"soft": True}, "--soft needs --node"),
        ({"custom": "second"}, "NAME=AMOUNT"),
        ({"custom": "second=lots"}, "--resources second"),
        ({"custom": "CPU=2"}, "with --num-cpus"),
    ],
)
def test_bad_options_name_the_option(values, message):
    with pytest.raises(SpecError, match=message):
        RayOptions.parse(**values)


def test_runtime_env_from_env_spec_and_env_vars(tmp_path):
    spec = RunSpec(
        backend="ray",
        env={"SEED": "1"},
        runtime_env=EnvSpec.from_options(base_dir=tmp_path, pip=["six==1.16.0"], working_dir="."),
    )
    runtime_env = ray_runtime_env(spec)
    assert runtime_env["pip"] == ["six==1.16.0"] and runtime_env["env_vars"] == {"SEED": "1"}
    assert runtime_env["working_dir"] == str(tmp_path)
    assert ray_runtime_env(RunSpec(backend="ray")) is None


def test_limits_a_ray_task_cannot_enforce_are_refused_not_ignored():
    assert RayBackend.enforced_limits == {"timeout"}
    ray = BackendFacts.of(RayBackend(ExecConfig()))
    defaults = ExecConfig().default_limits()
    admitted = admit(RunSpec(backend="ray", limits=Limits.parse(timeout="5s", network=True)), ray, Policy(), defaults)
    assert admitted.limits == Limits(timeout=5.0, network=True)  # no sandbox defaults; a Ray task has the network
    assert admit(RunSpec(backend="ray"), ray, Policy(), defaults).limits == Limits(timeout=defaults.timeout)
    with pytest.raises(BackendUnavailableError, match="a Ray task cannot enforce memory, pids limits"):
        admit(RunSpec(backend="ray", limits=Limits.parse(memory="1g", pids=10)), ray, Policy(), defaults)
