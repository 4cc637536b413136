"""Where an ordinary user's runs get cgroups: read from ``/proc/self/cgroup`` and a cgroup v2
tree. The choice of place is checked here on trees laid out as systemd lays out
``user@UID.service`` (plain files standing in for the kernel's); the two v2 modes enforce
their limits for real in tests/test_cgroup_v2.py, which scripts/vm-test runs in a cgroup-v2
VM (this host has cgroup v1)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import require

from jupyter_exec.backends.process.cgroups import (
    CONTROLLERS,
    PARENT,
    RunCgroup,
    cgroup_mode,
    delegated_parent,
    own_cgroup,
    systemd_scope_prefix,
)

# A Jupyter started as a user service made with Delegate=yes, its kernel moved into a leaf.
UNIT = "/user.slice/user-1001.slice/user@1001.service/app.slice/jupyter.service"
KERNEL = f"{UNIT}/kernel"


def _tree(root: Path, controllers: dict[str, str], kernel: str = KERNEL) -> None:
    """Groups down to the kernel's, which holds a process, as on a real host: the
    hierarchy's root holds init, the user manager's own group holds ``init.scope``;
    ``controllers`` offered per group (default: all three)."""
    path = root
    for group in ["", *kernel.strip("/").split("/")]:
        path /= group
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text("")
        (path / "cgroup.subtree_control").write_text("")
        (path / "cgroup.controllers").write_text(controllers.get(group, "cpu memory pids"))
        if group.startswith("user@"):
            (path / "init.scope").mkdir()
    (root / "cgroup.procs").write_text("1\n")
    (path / "cgroup.procs").write_text("4242\n")


def test_the_unified_group_is_read_from_proc_self_cgroup():
    hybrid = "9:pids:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/session-3.scope\n"
    assert own_cgroup(hybrid) == "/user.slice/session-3.scope"
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/docker/abc\n1:cpu:/\n") is None  # cgroup v1 only, as on this host


def test_runs_go_under_the_delegated_unit_the_kernel_is_in(tmp_path):
    _tree(tmp_path, {})
    assert delegated_parent(tmp_path, KERNEL, os.getuid()) == tmp_path / UNIT.strip("/") / PARENT


def test_systemds_own_groups_are_never_used(tmp_path):
    """A kernel in a unit of the user's manager, no leaf of its own: the groups above it are
    the user's on disk, but the manager's to manage (so the systemd mode applies)."""
    _tree(tmp_path, {}, kernel=UNIT)
    found = delegated_parent(tmp_path, UNIT, os.getuid())
    assert isinstance(found, str) and found.endswith(
        "app.slice is systemd's to manage (a unit made with Delegate=yes is not)"
    )
    (tmp_path / UNIT.strip("/")).rename(tmp_path / UNIT.strip("/").replace("app.slice/", ""))  # right in the manager's
    found = delegated_parent(tmp_path, UNIT.replace("app.slice/", ""), os.getuid())
    assert isinstance(found, str) and "user@1001.service is systemd's to manage" in found, found


def test_no_place_when_the_unit_cannot_hand_controllers_down(tmp_path):
    _tree(tmp_path, {"jupyter.service": "memory pids"})
    found = delegated_parent(tmp_path, KERNEL, os.getuid())  # the nearest group's reason
    assert isinstance(found, str) and found.endswith("jupyter.service is not given the cpu controller(s)"), found
    (tmp_path / UNIT.strip("/") / "cgroup.controllers").write_text("cpu memory pids")
    (tmp_path / UNIT.strip("/") / "cgroup.procs").write_text(
        "77\n"
    )  # v2 hands controllers down only from an empty group
    found = delegated_parent(tmp_path, KERNEL, os.getuid())
    assert isinstance(found, str) and found.endswith(
        "jupyter.service holds processes, so it cannot hand controllers down"
    )
    assert "no ancestor of this user's own" in str(delegated_parent(tmp_path, KERNEL, os.getuid() + 4242))
    assert "no ancestor" in str(delegated_parent(tmp_path, "/", os.getuid()))  # a container's own root
    assert "cannot read" in str(delegated_parent(tmp_path, "user.slice", os.getuid()))


def test_the_walk_stops_where_delegation_ends(tmp_path):
    """A container's delegated group: the walk never goes above it, to a group not the user's,
    however well that one would do."""
    require(os.geteuid() == 0, "needs root to give the upper group another owner")
    _tree(tmp_path, {}, kernel="/ours/kernel")
    (tmp_path / "cgroup.procs").write_text("")
    os.chown(tmp_path, 65534, 65534)
    assert delegated_parent(tmp_path, "/ours/kernel", os.getuid()) == tmp_path / "ours" / PARENT
    (tmp_path / "ours" / "cgroup.procs").write_text("77\n")
    found = delegated_parent(tmp_path, "/ours/kernel", os.getuid())
    assert isinstance(found, str) and "ours holds processes" in found, found


def test_a_systemd_scope_is_delegated_and_accounts_all_three():
    prefix = systemd_scope_prefix("jx-1-w2")
    assert prefix[:4] == ["systemd-run", "--user", "--scope", "--quiet"] and prefix[-1] == "--"
    assert "--unit=jx-1-w2" in prefix
    for prop in ("Delegate=yes", "MemoryAccounting=yes", "TasksAccounting=yes", "CPUAccounting=yes"):
        assert prop in prefix


def test_this_host_has_groups_for_root_only():
    mode = cgroup_mode()
    if os.geteuid() == 0:
        assert mode.kind == "root" and mode.parents, mode
    else:
        assert not mode.kind and "v1" in mode.detail, mode


def test_a_v2_group_gets_the_limits_in_cgroup_v2s_own_words(tmp_path):
    """What a run's v2 group is written and read (a directory of plain files standing in)."""
    group = RunCgroup(dict.fromkeys(CONTROLLERS, tmp_path), v2=True, made=False)
    group.set_limits(memory=256 * 2**20, pids=32, cpus=0.5)
    assert (tmp_path / "memory.max").read_text() == str(256 * 2**20)
    assert not (tmp_path / "memory.swap.max").exists()  # no swap accounting: nothing to turn off
    assert (tmp_path / "pids.max").read_text() == "32" and (tmp_path / "cpu.max").read_text() == "50000 100000"
    (tmp_path / "memory.swap.max").write_text("max")
    group.set_limits(memory=2**20, pids=None, cpus=None)
    assert (tmp_path / "memory.swap.max").read_text() == "0"  # memory without swap on top
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (tmp_path / "memory.peak").write_text("1048576\n")
    assert group.oom_killed() and group.peak_memory() == 2**20
    assert (tmp_path / "pids.max").read_text() == "max" and (tmp_path / "cpu.max").read_text() == "max 100000"


def test_a_group_set_up_for_one_runs_limits_takes_anothers(tmp_path):
    """The pool sets a waiting worker's group to the last run's limits; the next run's replace
    them, up or down or to none (v1's memory+swap limit never below the memory limit)."""
    require(os.geteuid() == 0 and cgroup_mode().kind == "root", "real cgroups need root here")
    group = RunCgroup.create(f"jx-{os.getpid()}-test-{tmp_path.name}")
    try:
        for memory, pids, cpus in ((256 * 2**20, 32, 0.5), (2**30, 64, None), (None, None, 1.0), (2**28, 8, None)):
            group.set_limits(memory=memory, pids=pids, cpus=cpus)
            memory_file = "memory.max" if group.v2 else "memory.limit_in_bytes"
            shown = int(group._read("memory", memory_file).replace("max", "-1"))
            assert shown == memory or (memory is None and (shown == -1 or shown > 2**60)), (memory, shown)
            assert group._read("pids", "pids.max").strip() == ("max" if pids is None else str(pids))
    finally:
        group.kill_and_remove()
