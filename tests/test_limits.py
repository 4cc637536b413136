"""The limits table: every place that parses, checks or defaults a limit reads its row, so a
limit's flag, parser and default are written once; ``all`` GPUs means one thing everywhere."""

from __future__ import annotations

import dataclasses
import math

import pytest

from jupyter_exec.backends.broker.wire import BrokerError, parse_run
from jupyter_exec.backends.container.config import DockerConfig
from jupyter_exec.backends.container.hostconfig import _device_request
from jupyter_exec.broker.rules import Capacity, Quotas
from jupyter_exec.broker.runs import _gpus_held
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import PolicyError, SpecError
from jupyter_exec.limits import LIMITS, Gpus
from jupyter_exec.magics.rayrun import RayMagics
from jupyter_exec.magics.sandbox import SandboxMagics
from jupyter_exec.policy import parse_policy
from jupyter_exec.spec import Limits

# A value no limit reads, and a good one of each, as a user would type it.
BAD = "lots"
GOOD = {
    "memory": "512m",
    "cpus": "0.5",
    "timeout": "30s",
    "cpu_time": "10s",
    "pids": "64",
    "fsize": "100m",
    "shm": "256m",
    "network": "index.example.org,*.example.org:8443",
    "gpus": "device=0,1",
}


def _options(magic) -> dict[str, object]:
    return {action.option_strings[0]: action for action in magic.parser._actions if action.option_strings}


def test_every_limits_field_has_one_row():
    assert sorted(LIMITS) == sorted(f.name for f in dataclasses.fields(Limits))
    assert set(GOOD) == set(LIMITS)
    assert LIMITS["timeout"].scope == "cell" and {limit.scope for limit in LIMITS.values()} == {"session", "cell"}


@pytest.mark.parametrize("field", list(LIMITS))
def test_a_row_is_what_the_magic_offers_and_parses(field):
    limit = LIMITS[field]
    option = _options(SandboxMagics.sandbox)[limit.flag]
    assert option.help == limit.option_help() and limit.help in option.help
    if limit.kind != "switch":
        assert option.metavar == limit.metavar
    line = limit.flag if limit.kind == "switch" else f"{limit.flag} {GOOD[field]}"
    args = SandboxMagics.sandbox.parser.parse_args(line.split())
    from jupyter_exec.magics.options import limits

    asked = limits(args)
    assert asked == Limits.parse(**{field: GOOD[field]}) and getattr(asked, field) == limit.read(GOOD[field], "")
    if limit.kind != "switch":
        with pytest.raises(SpecError, match=f"^{limit.flag}: "):
            Limits.parse(**{field: "lots of hosts" if limit.kind == "hosts" else BAD})


def test_network_alone_is_all_of_it_and_with_hosts_only_those():
    from jupyter_exec.magics.options import limits

    parse = SandboxMagics.sandbox.parser.parse_args
    assert limits(parse(["--network", "--mem", "1g"])).network is True
    assert str(limits(parse(["--network", "files.test"])).network) == "files.test"
    assert limits(parse([])).network is False


def test_rayrun_offers_only_the_limit_a_ray_task_keeps():
    offered = {flag for flag in _options(RayMagics.rayrun) if flag in {limit.flag for limit in LIMITS.values()}}
    assert offered == {"--timeout"}
    assert _options(RayMagics.rayrun)["--memory"].help.startswith("memory the task reserves")  # Ray's, not --mem


@pytest.mark.parametrize("field", [f for f, limit in LIMITS.items() if limit.variable])
def test_a_kernel_default_is_a_setting_and_a_variable_read_through_its_row(field, monkeypatch):
    limit = LIMITS[field]
    trait = ExecConfig.class_traits()[limit.setting]
    assert limit.variable == f"JX_{limit.setting.upper()}" and limit.flag == "--" + limit.setting.replace("_", "-")
    assert trait.help == f"{limit.config_help()} Env: {limit.variable}."
    monkeypatch.delenv(limit.variable, raising=False)
    assert getattr(ExecConfig(), limit.setting) == limit.default  # the table owns the default
    monkeypatch.setenv(limit.variable, str(GOOD[field]))
    assert getattr(ExecConfig().default_limits(), field) == limit.read(GOOD[field], limit.flag)
    monkeypatch.setenv(limit.variable, BAD)
    with pytest.raises(SpecError) as bad:
        ExecConfig().default_limits()
    assert str(bad.value).startswith(f"{limit.variable}: ") and limit.flag not in str(bad.value)
    with pytest.raises(SpecError, match=f"^ExecConfig.{limit.setting}: "):  # set by %config: named so
        ExecConfig(**{limit.setting: BAD}).default_limits()


def test_limits_without_a_kernel_default_have_no_setting():
    assert {f for f, limit in LIMITS.items() if limit.setting is None} == {"network", "gpus"}
    assert not {"network", "gpus"} & set(ExecConfig.class_traits())


@pytest.mark.parametrize("field", [f for f, limit in LIMITS.items() if limit.ceiling])
def test_a_row_is_a_policy_ceiling(field):
    limit = LIMITS[field]
    ceiling = {"switch": False, "hosts": False, "count": 1}.get(limit.kind, GOOD[field])
    policy = parse_policy({field: ceiling}, "p.yaml")
    assert policy.ceilings[field].value == limit.read_ceiling(ceiling, "")
    with pytest.raises(PolicyError, match=f"^policy p.yaml, key {field}: "):
        parse_policy({field: BAD}, "p.yaml")
    over = {"switch": True, "hosts": True, "count": "2"}.get(limit.kind)
    if limit.kind == "cap":  # a cap is refused above its ceiling, and an unset one gets it
        over = limit.show(2 * limit.read(GOOD[field], ""))
        assert getattr(policy.bound(Limits(), Limits(), None), field) == policy.ceilings[field].value
    with pytest.raises(PolicyError, match=f"^{limit.flag} "):
        policy.bound(Limits.parse(**{field: over}), Limits(), None)


def test_the_broker_reads_a_request_s_limits_through_the_table():
    as_sent = Limits.parse(**GOOD).as_dict()
    assert parse_run({"code": "1", "limits": as_sent}, 100).limits == Limits.parse(**GOOD)
    with pytest.raises(BrokerError, match=r"^limits\.pids: expected a whole number"):
        parse_run({"code": "1", "limits": {"pids": 1.5}}, 100)


def test_one_owner_for_the_shm_default():
    assert DockerConfig.class_traits()["shm_size"].default_value_repr().endswith(repr(LIMITS["shm"].default))


# ---- GPUs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "shown", "count"),
    [("all", "all", math.inf), ("2", "2", 2), ("0,1", "device=0,1", 2), ("device=GPU-abcd", "device=gpu-abcd", 1)],
)
def test_gpus_read_and_count(typed, shown, count):
    gpus = Gpus.parse(typed)
    assert str(gpus) == shown and gpus.count() == count and Gpus.parse(str(gpus)) == gpus
    assert Limits.parse(gpus=typed) == Limits(gpus=typed) == Limits.read(Limits(gpus=typed).as_dict())


def test_all_gpus_is_every_gpu_there_is_everywhere():
    """The policy cannot know the machine: ``all`` is above any ceiling. The container asks its engine
    for every GPU it has; a broker that knows its machine's GPUs holds all of them for the run."""
    policy = parse_policy({"gpus": 2}, "p.yaml")
    with pytest.raises(PolicyError, match=r"^--gpus all is above the administrator's ceiling of 2 \(policy p.yaml\)"):
        policy.bound(Limits.parse(gpus="all"), Limits(), None)
    policy.bound(Limits.parse(gpus="2"), Limits(), None)
    asked = Limits.parse(gpus="all")
    assert _device_request(dict, asked.gpus) == {"count": -1, "capabilities": [["gpu"]]}
    assert _device_request(dict, Gpus.parse("0,1")) == {"device_ids": ["0", "1"], "capabilities": [["gpu"]]}
    assert _gpus_held(asked, Capacity(gpus=4), Quotas()) == 4 == Gpus.parse("all").count(4)
    assert _gpus_held(asked, Capacity(), Quotas()) == 0  # nothing counts GPUs there
    with pytest.raises(BrokerError, match=r"^--gpus all is more than your GPU quota \(2\)"):
        _gpus_held(asked, Capacity(), Quotas(gpus=2))
