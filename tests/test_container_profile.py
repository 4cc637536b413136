"""The container backend's own rules as data: the seccomp profile matches the process sandbox's
deny list (one source of truth), the runtime registration, the policy's forced runtime, and
the options that name a runtime. What they do inside a container is tested on every engine
in test_container_lockdown.py."""

from __future__ import annotations

import errno
import itertools
import json
import os
from pathlib import Path

import pytest

from jupyter_exec.backends.container import seccomp
from jupyter_exec.backends.container.config import ContainerOptions
from jupyter_exec.backends.container.runtimes import REQUIRED_ARGS, fix_text, merge, missing_args
from jupyter_exec.errors import PolicyError, SpecError
from jupyter_exec.policy import parse_policy
from jupyter_exec.runner import confine
from jupyter_exec.spec import RunSpec


def _refused(profile: dict, name: str) -> list[dict]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_profile_refuses_every_call_the_process_sandbox_refuses(arch):
    denied, clone_flags = confine.deny_list(arch)
    profile = seccomp.profile(arch=arch)
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    outright = {n for rule in profile["syscalls"] if "args" not in rule for n in rule["names"]}
    assert denied <= outright and outright >= seccomp.DOCKER_DEFAULT_BLOCKS
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "keyctl", "add_key"):
        assert name in outright, name
    for name in ("request_key", "perf_event_open", "bpf", "unshare", "setns", "ptrace", "mount"):
        assert name in outright, name
    # clone: one rule per namespace flag, so any CLONE_NEW* is refused and a plain clone is not
    flags = {rule["args"][0]["value"] for rule in _refused(profile, "clone")}
    assert sum(flags) == clone_flags and all(bin(flag).count("1") == 1 for flag in flags)
    assert 0x10000000 in flags  # CLONE_NEWUSER
    every_rule = profile["syscalls"]
    assert all(r["action"] == "SCMP_ACT_ERRNO" for r in every_rule)
    assert {r["errnoRet"] for r in every_rule if r["names"] != ["clone3"]} == {errno.EPERM}  # a probe goes on


def test_clone3_gets_enosys_so_libc_falls_back_but_not_under_gvisor():
    assert [r["errnoRet"] for r in _refused(seccomp.profile(), "clone3")] == [errno.ENOSYS]
    assert _refused(seccomp.profile(gvisor=True), "clone3") == []  # gVisor: no clone3, its own ENOSYS


# --- ours against Docker's current default profile, rule by rule (tests/data/seccomp/README.md) ---

REFERENCE = Path(__file__).parent / "data" / "seccomp"
_OPS = {
    "SCMP_CMP_EQ": lambda arg, value, _: arg == value,
    "SCMP_CMP_NE": lambda arg, value, _: arg != value,
    "SCMP_CMP_LT": lambda arg, value, _: arg < value,
    "SCMP_CMP_LE": lambda arg, value, _: arg <= value,
    "SCMP_CMP_GT": lambda arg, value, _: arg > value,
    "SCMP_CMP_GE": lambda arg, value, _: arg >= value,
    "SCMP_CMP_MASKED_EQ": lambda arg, mask, value: arg & mask == value,
}


def _applies(rule: dict) -> bool:
    """Whether a rule binds one of our containers: x86_64, no capabilities (ours drop them all),
    a kernel newer than any ``minKernel`` the reference names."""
    includes, excludes = rule.get("includes", {}), rule.get("excludes", {})
    return (
        not includes.get("caps")
        and "amd64" in includes.get("arches", ["amd64"])
        and ("amd64" not in excludes.get("arches", []))
    )


def _refuses(profile: dict, name: str, args: tuple[int, ...]) -> bool:
    """What the engine would do with ``name(*args)``: a matching rule that refuses wins, then one
    that allows, else the profile's default."""
    actions = {
        rule["action"]
        for rule in profile["syscalls"]
        if name in rule["names"]
        and _applies(rule)
        and all(_OPS[c["op"]](args[c["index"]], c["value"], c.get("valueTwo", 0)) for c in rule.get("args", []))
    }
    if actions - {"SCMP_ACT_ALLOW"}:
        return True
    return not actions and profile["defaultAction"] != "SCMP_ACT_ALLOW"


def _probes(profiles: list[dict], name: str) -> list[tuple[int, ...]]:
    """Argument vectors that cross every condition either profile sets on ``name``: each value,
    its neighbours, each bit of a mask, and each with a high bit the kernel ignores for ``int``s."""
    values: dict[int, set[int]] = {}
    for profile in profiles:
        for rule in profile["syscalls"]:
            for c in rule.get("args", []) if name in rule["names"] else []:
                value = c["value"]
                near = {value - 1, value, value + 1, c.get("valueTwo", 0), 0}
                near |= {1 << bit for bit in range(64) if value >> bit & 1}
                values.setdefault(c["index"], set()).update(n | high for n in near for high in (0, 1 << 32))
    indexes = sorted(values)
    vectors = []
    for chosen in itertools.product(*(sorted(v for v in values[i] if 0 <= v < 2**64) for i in indexes)):
        args = [0] * 6
        for index, value in zip(indexes, chosen, strict=True):
            args[index] = value
        vectors.append(tuple(args))
    return vectors or [(0,) * 6]


def _allowed_by_ours_only(ours: dict) -> list[str]:
    reference = json.loads((REFERENCE / "docker-default.json").read_text())
    names = set((REFERENCE / "syscalls-x86_64.txt").read_text().split())  # the calls an x86_64 kernel has
    return [
        f"{name}{args[:3]}"
        for name in sorted(names)
        for args in _probes([reference, ours], name)
        if _refuses(reference, name, args) and not _refuses(ours, name, args)
    ]


def test_the_profile_refuses_everything_dockers_current_default_refuses():
    assert _allowed_by_ours_only(seccomp.profile(arch="x86_64")) == []


def test_the_comparison_catches_a_weaker_profile():
    """The comparison itself can fail: ours without one name, one argument rule, or one socket rule."""
    ours = seccomp.profile(arch="x86_64")
    outright = ours["syscalls"][0]
    outright["names"] = [n for n in outright["names"] if n != "sethostname"]
    ours["syscalls"] = [r for r in ours["syscalls"] if not ("personality" in r["names"] and r["args"][0]["value"] == 1)]
    ours["syscalls"] = [r for r in ours["syscalls"] if not ("socket" in r["names"] and r["args"][0]["valueTwo"] == 40)]
    missed = _allowed_by_ours_only(ours)
    assert "sethostname(0, 0, 0)" in missed
    assert "personality(1, 0, 0)" in missed and "socket(40, 0, 0)" in missed
    assert not any(m.startswith(("personality(0,", "socket(2,")) for m in missed)


def test_only_plain_linux_personalities_are_allowed():
    ours = seccomp.profile()
    for persona in (0, 0x0008, 0x20000, 0x20008):
        assert not _refuses(ours, "personality", (persona,)), hex(persona)
    for persona in (0x0040000, 0x0400000, 0x0001, 0xFFFFFFFF, 0x20009):  # ASLR off, READ_IMPLIES_EXEC, the query
        assert _refuses(ours, "personality", (persona,)), hex(persona)


def test_the_refused_sockets_are_refused_whatever_the_high_bits():
    ours = seccomp.profile()
    for family, protocol in confine.DENIED_SOCKETS:
        for high in (0, 1 << 32, 0xFFFF_FFFF << 32):
            assert _refuses(ours, "socket", (family | high, 3, (protocol or 0) | high)), (family, protocol, high)
    assert not _refuses(ours, "socket", (16, 3, 0))  # NETLINK_ROUTE: what `ip addr` and getifaddrs read
    assert not _refuses(ours, "socket", (2, 1, 0)) and not _refuses(ours, "socket", (1, 1, 0))


def test_a_profile_file_is_written_once_under_a_name_of_its_content(tmp_path):
    first = seccomp.profile_file(tmp_path)
    assert json.loads(first.read_text()) == seccomp.profile()
    mtime = first.stat().st_mtime_ns
    assert seccomp.profile_file(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert seccomp.profile_file(tmp_path, gvisor=True) != first
    assert oct(first.stat().st_mode & 0o777) == "0o644"


def test_registering_runsc_merges_with_what_daemon_json_holds(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(
        json.dumps(
            {"log-driver": "local", "runtimes": {"runsc": {"path": "/opt/runsc", "runtimeArgs": ["--platform=kvm"]}}}
        )
    )
    assert merge(path) is True
    written = json.loads(path.read_text())
    assert written["log-driver"] == "local"
    runsc = written["runtimes"]["runsc"]
    assert runsc["path"] == "/opt/runsc" and runsc["runtimeArgs"][0] == "--platform=kvm"
    assert missing_args("runsc", {"runsc": tuple(runsc["runtimeArgs"])}) == []
    assert merge(path) is False  # nothing left to add
    fresh = tmp_path / "new.json"
    assert merge(fresh) is True and list(json.loads(fresh.read_text())["runtimes"]) == ["runsc"]


def test_fix_runtime_gives_the_entry_and_how_to_reload():
    text = fix_text()
    entry = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert entry["runtimes"]["runsc"]["runtimeArgs"] == list(REQUIRED_ARGS["runsc"])
    assert "kill -HUP $(cat /var/run/docker.pid)" in text and "--network=none" in text
    assert missing_args("runsc", {}) == list(REQUIRED_ARGS["runsc"])
    assert missing_args("runsc", {"runsc": ("--network=none",)}) == ["--host-fifo=open", "--oci-seccomp"]


def test_the_policy_can_force_a_runtime(tmp_path):
    from jupyter_exec.backends.container import ContainerBackend

    policy = parse_policy({"runtime": "runsc"}, "/etc/jupyter-exec/policy.yaml")
    forced = ContainerBackend.admit(RunSpec(backend="container"), policy)
    assert forced is not None and forced.placement == ContainerOptions("runsc")
    assert ContainerBackend.admit(RunSpec(placement=ContainerOptions("runsc")), policy).placement.runtime == "runsc"
    with pytest.raises(
        PolicyError, match=r"--runtime runc: the administrator's policy .* runs every container under runsc"
    ):
        ContainerBackend.admit(RunSpec(placement=ContainerOptions("runc")), policy)
    assert ContainerBackend.admit(RunSpec(), parse_policy({"memory": "1g"}, "p.yaml")) is None
    other = parse_policy({"runtime": "kata"}, "/home/me/policy.yaml")
    both = policy.strictest(other)
    assert both.broken and "force different runtimes (runsc, kata)" in both.broken
    with pytest.raises(PolicyError, match=r"key runtime: expected one name, e\.g\. runsc"):
        parse_policy({"runtime": ["runsc"]}, "p.yaml")


@pytest.mark.parametrize("name", ["runsc", "kata-runtime", "io.containerd.runc.v2"])
def test_runtime_names_are_read(name):
    assert ContainerOptions.parse(name).runtime == name


@pytest.mark.parametrize("name", ["run sc", "../runsc", "-x"])
def test_a_bad_runtime_name_is_refused(name):
    with pytest.raises(SpecError, match=r"--runtime: .* is not a runtime name"):
        ContainerOptions.parse(name)


def test_docker_is_the_container_backend_by_another_name():
    from jupyter_exec.backends.factory import backend_class, resolve_name

    assert backend_class("docker") is backend_class("container") and resolve_name("docker") == "container"


@pytest.mark.ordinary_user
def test_the_engine_is_configured_else_docker_host_else_found(monkeypatch):
    from jupyter_exec.backends.container import discovery

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert discovery.configured_url("auto") is None
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert discovery.configured_url("auto") == "unix:///run/user/1000/docker.sock"
    assert discovery.configured_url("unix:///run/podman/podman.sock") == "unix:///run/podman/podman.sock"
    monkeypatch.setenv("JX_CONTAINER_URL", "tcp://engine:2376")
    from jupyter_exec.backends.container import DockerConfig

    assert DockerConfig().url == "tcp://engine:2376" and discovery.choose(DockerConfig().url).url == "tcp://engine:2376"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    if os.geteuid() == 0:  # root: the rootful sockets, Docker's first
        assert [c.label for c in discovery.candidates()] == ["Docker (rootful)", "Podman (rootful)"]
    else:  # anyone else: rootless ones first
        assert [c.label for c in discovery.candidates()][:2] == ["Docker (rootless)", "Podman (rootless)"]
