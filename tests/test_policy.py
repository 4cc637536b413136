"""The administrator's policy: read as users type values, combined to the strictest, enforced
on every run before anything is recorded or started, failing closed, shown by doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Kernel, require

from jupyter_exec.backends.base import Availability
from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.factory import choose, resolve_name
from jupyter_exec.backends.process import SeccompBackend
from jupyter_exec.backends.raycluster import RayBackend, RayOptions
from jupyter_exec.config import ExecConfig
from jupyter_exec.current import set_current_manager
from jupyter_exec.errors import BackendUnavailableError, PolicyError
from jupyter_exec.manager import Manager
from jupyter_exec.policy import POLICY_DIRS, load_policy
from jupyter_exec.spec import Limits, RunSpec

STRICT = """\
memory: 512m        # the default 2g is above it
cpus: 1             # no default: unset means this
timeout: 2s
pids: 64
network: false
gpus: 0
backends: [seccomp, local, ray]
ray_addresses: [local]
"""


def policy_from(tmp_path: Path, text: str, name: str = "policy.yaml", system: str | None = None):
    """The policy a process would hold with ``text`` as JX_POLICY (and ``system`` as a system file)."""
    path = tmp_path / name
    path.write_text(text)
    dirs = ()
    if system is not None:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "policy.yaml").write_text(system)
        dirs = (tmp_path / "etc",)
    return load_policy(dirs, {"JX_POLICY": str(path)}), path


def refusal(call) -> str:
    with pytest.raises(PolicyError) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


# ---- reading and combining ----------------------------------------------------------------


def test_values_are_read_as_users_type_them(tmp_path):
    policy, path = policy_from(
        tmp_path,
        STRICT + "fsize: 1.5g\ncpu_time: 30m\nshm: 64m\nray_num_cpus: 1.5\n"
        'ray_memory: 4g\nimages: ["jupyter-exec/*"]\n',
    )
    values = {key: ceiling.value for key, ceiling in policy.ceilings.items()}
    assert values == {
        "memory": 512 << 20,
        "cpus": 1.0,
        "timeout": 2.0,
        "pids": 64,
        "network": 0.0,
        "gpus": 0,
        "fsize": 1.5 * 2**30,
        "cpu_time": 1800.0,
        "shm": 64 << 20,
        "ray_num_cpus": 1.5,
        "ray_memory": 4 << 30,
    }
    assert {c.source for c in policy.ceilings.values()} == {str(path)} and policy.broken is None
    assert policy.allowed_backends == {"seccomp", "local", "ray"}


def test_json_works_too(tmp_path):
    policy, _ = policy_from(tmp_path, json.dumps({"memory": "1g", "backends": ["docker"]}), "policy.json")
    # docker is the container backend's other name, in policy files too
    assert policy.ceilings["memory"].value == 1 << 30 and policy.allowed_backends == {"container"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mem: 2g\n", "unknown key 'mem'; did you mean memory? known keys: memory, cpus"),
        ("memory: lots\n", "key memory: cannot read 'lots' as a size; write it like 512m, 2g or 1.5GiB"),
        ("timeout: soon\n", "key timeout: cannot read 'soon' as a duration; write it like 30, 30s"),
        ("pids: -1\n", "key pids: must be at least 1"),
        ("gpus: 1.5\n", "key gpus: expected a whole number like 2"),
        ("network: no-thanks\n", "key network: expected true or false"),
        ("backends: seccomp\n", "key backends: expected a list of names, e.g. [seccomp, container]"),
        ("backends: [seccomp, podman]\n", "key backends: unknown backend 'podman'; choose from local, seccomp"),
        ("- memory: 2g\n", "expected keys like `memory: 2g` at the top level, got a list"),
        ("memory: [2g\n", "cannot read it (expected ',' or ']'"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_the_key_and_the_fix(tmp_path, text, says):
    policy, path = policy_from(tmp_path, text)
    assert policy.broken.startswith(f"policy {path}") and says in policy.broken and "\n" not in policy.broken
    message = refusal(lambda: choose("seccomp", policy))  # fail closed: nothing runs
    assert message == f"every run is refused until the administrator's policy is fixed: {policy.broken}"


def test_a_missing_jx_policy_file_fails_closed(tmp_path):
    policy = load_policy((), {"JX_POLICY": str(tmp_path / "nope.yaml")})
    assert "No such file" in refusal(lambda: choose("local", policy))


def test_no_file_means_no_policy(tmp_path):
    policy = load_policy((tmp_path,), {})
    assert not policy.sources and policy.allowed_backends is None
    limits = Limits.parse(memory="64g", network=True, gpus="all")
    assert policy.bound(limits, limits, None) is limits


def test_files_combine_to_the_strictest_whatever_the_order(tmp_path):
    system = "memory: 2g\nbackends: [seccomp, docker]\nimages: ['jupyter-exec/*']\n"
    loose = "memory: 8g\ntimeout: 1m\nbackends: [seccomp, docker, local]\nimages: ['*']\nnetwork: true\n"
    policy, path = policy_from(tmp_path, loose, system=system)
    system_path = str(tmp_path / "etc" / "policy.yaml")
    assert policy.sources == (system_path, str(path))
    assert policy.ceilings["memory"].value == 2 << 30 and policy.ceilings["memory"].source == system_path
    assert policy.ceilings["timeout"].value == 60 and policy.ceilings["timeout"].source == str(path)  # tightened
    assert policy.allowed_backends == {"seccomp", "container"}
    assert refusal(lambda: choose("local", policy)) == (
        f"the local backend is not allowed by the administrator's policy ({system_path}); allowed: seccomp, container"
    )
    assert "allowed: jupyter-exec/*" in refusal(lambda: policy.check_image("python:3.12"))
    policy.check_image("jupyter-exec/base:latest")
    flipped = load_policy((tmp_path / "etc",), {}).strictest(load_policy((), {"JX_POLICY": str(path)}))
    assert {k: c.value for k, c in flipped.ceilings.items()} == {k: c.value for k, c in policy.ceilings.items()}


# ---- what a run gets ----------------------------------------------------------------------


def test_asked_above_a_ceiling_is_refused_and_unset_gets_the_ceiling(tmp_path):
    policy, path = policy_from(tmp_path, STRICT)
    defaults = Limits.parse(memory="2g", timeout="10m", pids="256", fsize="1g")
    assert refusal(lambda: policy.bound(Limits.parse(memory="8g"), defaults, None)) == (
        f"--mem 8g is above the administrator's ceiling of 512m (policy {path}); ask for at most 512m"
    )
    bounded = policy.bound(Limits(), defaults, None)
    assert (bounded.memory, bounded.cpus, bounded.timeout, bounded.pids, bounded.fsize) == (
        512 << 20,
        1,
        2,
        64,
        1 << 30,
    )
    asked = Limits.parse(memory="100m", timeout="1s")
    assert policy.bound(asked, asked.merged_over(defaults), None).memory == 100 << 20  # below: kept
    ray = policy.bound(Limits(), Limits(timeout=600.0), frozenset({"timeout"}))
    assert ray == Limits(timeout=2.0)  # only what the backend enforces is applied
    assert "drop --network" in refusal(lambda: policy.bound(Limits(network=True), Limits(), None))
    assert "--gpus all is above" in refusal(lambda: policy.bound(Limits(gpus="all"), Limits(), None))


def test_gpu_and_ray_ceilings(tmp_path):
    policy, path = policy_from(
        tmp_path, "gpus: 1\nray_num_cpus: 4\nray_memory: 8g\nray_addresses: [local, 'ray://head*']\n"
    )
    assert "--gpus device=0,1 is above the administrator's ceiling of 1" in refusal(
        lambda: policy.bound(Limits(gpus="device=0,1"), Limits(), None)
    )
    policy.bound(Limits(gpus="1"), Limits(), None)

    def admit(**options: object) -> None:
        RayBackend.admit(RunSpec(backend="ray", placement=RayOptions.parse(**options)), policy)

    assert refusal(lambda: admit(num_gpus=2)) == (
        f"--num-gpus 2 is above the administrator's ceiling of 1 (policy {path}); ask for at most 1"
    )
    assert "--num-cpus 8 is above" in refusal(lambda: admit(num_cpus=8))
    assert "--memory 16g is above" in refusal(lambda: admit(memory="16g"))
    assert refusal(lambda: admit(address="10.0.0.1:6379")) == (
        f"Ray address 10.0.0.1:6379 is not allowed by the administrator's policy ({path}); allowed: local, ray://head*"
    )
    admit(num_gpus=1, address="ray://head.internal:10001")
    admit()  # the embedded local Ray


def test_map_is_checked_before_connecting(tmp_path):
    import jupyter_exec
    from jupyter_exec.backends.raycluster.connection import connection

    policy, path = policy_from(tmp_path, STRICT)
    manager = Manager(ExecConfig(data_dir=str(tmp_path / "data"), pool_size=0))
    manager.policy = policy
    set_current_manager(manager)
    try:
        assert refusal(lambda: jupyter_exec.map(abs, [1], backend="ray", num_gpus=4)) == (
            f"--num-gpus 4 is above the administrator's ceiling of 0 (policy {path}); drop --num-gpus"
        )
        assert "Ray address ray://elsewhere:10001 is not allowed" in refusal(
            lambda: jupyter_exec.map(abs, [1], backend="ray", address="ray://elsewhere:10001")
        )
        assert not connection().connected and manager.records.runs() == []  # refused: nothing recorded
    finally:
        set_current_manager(None)
        manager.shutdown()


def test_auto_never_picks_a_forbidden_backend(tmp_path, monkeypatch):
    ok = classmethod(lambda cls: Availability(True))
    monkeypatch.setattr(ContainerBackend, "availability", ok)
    monkeypatch.setattr(SeccompBackend, "availability", ok)
    policy, _ = policy_from(tmp_path, "backends: [seccomp, local]\n")
    assert resolve_name("auto") == "container" and choose("auto", policy) == "seccomp"
    monkeypatch.setattr(SeccompBackend, "availability", classmethod(lambda cls: Availability(False, "no landlock")))
    with pytest.raises(
        BackendUnavailableError,
        match=r"container: not allowed by the administrator's policy; seccomp: no landlock.*pass --backend local",
    ):
        choose("auto", policy)
    strict, _ = policy_from(tmp_path, "backends: [seccomp]\n", "strict.yaml")
    with pytest.raises(BackendUnavailableError) as caught:
        choose("auto", strict)
    assert "--backend local" not in str(caught.value)  # not offered when it is forbidden too


# ---- through a kernel ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A kernel whose JX_POLICY is STRICT (the user's own file: it can only tighten)."""
    home = tmp_path_factory.mktemp("policy-strict")
    path = home / "policy.yaml"
    path.write_text(STRICT)
    kernel = Kernel(home / "data", home, env={"JX_POLICY": str(path)})
    kernel.policy_path = path
    yield kernel
    kernel.shutdown()


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--mem 8g", "--mem 8g is above the administrator's ceiling of 512m (policy {path}); ask for at most 512m"),
        ("--timeout 1m", "--timeout 1m is above the administrator's ceiling of 2s (policy {path}); ask for at most 2s"),
        ("--network", "--network is not allowed by the administrator's policy ({path}); drop --network"),
        ("--gpus 1", "--gpus 1 is above the administrator's ceiling of 0 (policy {path}); drop --gpus"),
        (
            "--backend docker",
            "the container backend is not allowed by the administrator's policy ({path}); allowed: seccomp, local, ray",
        ),
    ],
)
def test_over_the_policy_is_refused_and_nothing_recorded(strict, options, message):
    assert strict.refused(f"%%sandbox {options}\nprint('ran')") == message.format(path=strict.policy_path)


@pytest.mark.kernel
def test_unset_limits_get_the_ceiling(strict):
    began = time.monotonic()
    cell = strict.run("%%sandbox\nimport time\nprint('started', flush=True)\ntime.sleep(20)")
    assert cell.error and cell.error["ename"] == "TaskTimeoutError" and "started" in cell.stdout
    assert time.monotonic() - began < 8  # stopped at the policy's 2 s, not the default 10m
    run = strict.last_run()
    limits = json.loads(strict.records().get(run["id"])["spec"])["limits"]
    assert (run["status"], limits["timeout"], limits["memory"], limits["pids"], limits["cpus"]) == (
        "timeout",
        2.0,
        512 << 20,
        64,
        1.0,
    )


@pytest.mark.kernel
def test_auto_avoids_a_forbidden_backend(strict):
    require(resolve_name("auto") == "container", "containers are not the default here, so there is nothing to avoid")
    assert strict.run("%%sandbox\n6 * 7", check=True).result_text == "42"
    assert strict.last_run()["backend"] == "seccomp"


@pytest.mark.kernel
def test_ray_over_the_ceiling_is_refused_before_connecting(strict):
    path = strict.policy_path
    assert strict.refused("%%rayrun --num-gpus 4\nprint('ran')") == (
        f"--num-gpus 4 is above the administrator's ceiling of 0 (policy {path}); drop --num-gpus"
    )
    assert strict.refused("%%rayrun --address 10.0.0.1:6379\nprint('ran')") == (
        f"Ray address 10.0.0.1:6379 is not allowed by the administrator's policy ({path}); allowed: local"
    )
    assert (
        strict.eval(
            "__import__('jupyter_exec.backends.raycluster.connection').backends.raycluster.connection.connection().connected"
        )
        is False
    )
    assert strict.eval("'ray' in __import__('sys').modules and __import__('ray').is_initialized()") is False


@pytest.mark.kernel
def test_policy_and_doctor_show_the_policy(strict):
    shown = strict.run("%jx policy", check=True).stdout
    assert f"policy: from {strict.policy_path} (JX_POLICY can only tighten it)" in shown
    assert f"memory         at most 512m   ({strict.policy_path})" in shown
    assert "network        not allowed" in shown and "backends       seccomp, local, ray" in shown
    doctor = strict.run("%jx doctor", check=True).stdout
    assert shown.strip() in doctor and "%%sandbox uses: seccomp" in doctor


@pytest.mark.kernel
def test_a_malformed_policy_refuses_every_run(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("memory: 2g\ntimeout: soon\n")
    broken = Kernel(tmp_path / "data", tmp_path, env={"JX_POLICY": str(path)})
    try:
        why = (
            f"every run is refused until the administrator's policy is fixed: policy {path}, key timeout: "
            "cannot read 'soon' as a duration; write it like 30, 30s, 5m or 1h30m"
        )
        assert broken.refused("%%sandbox --backend local\nprint('ran')") == why
        assert broken.refused("%%sandbox\nprint('ran')") == why
        assert broken.refused("%%rayrun\nprint('ran')") == why
        doctor = broken.run("%jx doctor", check=True).stdout
        assert f"BROKEN, every run is refused: policy {path}, key timeout" in doctor
    finally:
        broken.shutdown()
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_exec.cli", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "JX_POLICY": str(path)},
    )
    assert done.returncode == 1 and "%%sandbox has no sandbox to use: every run is refused" in done.stdout


@pytest.fixture
def system_policy():
    """A policy in this environment's ``{sys.prefix}/etc/jupyter-exec/``, always removed again."""
    directory = POLICY_DIRS[1]
    path = directory / "policy.yaml"
    assert not path.exists(), f"{path} exists already: not overwriting a real policy"
    made = [d for d in (directory.parent, directory) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        for created in reversed(made):
            created.rmdir()


@pytest.mark.kernel
def test_jx_policy_cannot_loosen_the_system_policy(kernel, system_policy, tmp_path):
    system_policy.write_text("memory: 1g\nbackends: [seccomp, docker]\nimages: ['jupyter-exec/base:*']\n")
    loose = tmp_path / "mine.yaml"
    loose.write_text("memory: 8g\ntimeout: 5m\nbackends: [seccomp, docker, local]\nimages: ['*']\n")
    fresh = Kernel(tmp_path / "data", tmp_path, env={"JX_POLICY": str(loose)})
    try:
        # The session kernel made its Manager before the file existed: it keeps its own (no) policy.
        assert kernel.run("%%sandbox --backend local --mem 1500m\n'free'", check=True).result_text == "'free'"
        assert "policy: none" in kernel.run("%jx policy", check=True).stdout
        system_policy.unlink()  # the fresh kernel read it once, when the extension loaded
        assert fresh.refused("%%sandbox --backend seccomp --mem 2g\nprint('ran')") == (
            f"--mem 2g is above the administrator's ceiling of 1g (policy {system_policy}); ask for at most 1g"
        )
        assert fresh.refused("%%sandbox --backend local\nprint('ran')") == (
            f"the local backend is not allowed by the administrator's policy ({system_policy}); "
            "allowed: seccomp, container"
        )
        fresh.run("%%sandbox --backend seccomp\n1", check=True)
        limits = json.loads(fresh.records().get(fresh.last_run()["id"])["spec"])["limits"]
        assert (limits["memory"], limits["timeout"]) == (1 << 30, 300.0)  # JX_POLICY did tighten the timeout
        require(ContainerBackend.availability().ok, "Docker with the base image is not available")
        (tmp_path / "env.yaml").write_text("image: python:3.12-slim\n")
        assert fresh.refused("%%sandbox --backend docker --env-spec env.yaml\nprint('ran')") == (
            f"image python:3.12-slim is not allowed by the administrator's policy ({system_policy}); "
            "allowed: jupyter-exec/base:*"
        )
        assert fresh.run("%%sandbox --backend docker\nprint('in docker')", check=True).stdout == "in docker\n"
    finally:
        fresh.shutdown()
