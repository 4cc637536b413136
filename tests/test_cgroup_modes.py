"""Where an ordinary user's runs get cgroups: read from ``/proc/self/cgroup`` and a cgroup v2
tree. This host has cgroup v1 only, so the delegated and systemd modes cannot run here;
what can be checked without v2 is the choice of place, on a tree laid out as systemd lays
out ``user@UID.service`` (plain files standing in for the kernel's)."""

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

KERNEL = "/user.slice/user-1001.slice/user@1001.service/app.slice/jupyter.service"


def _tree(root: Path, controllers: dict[str, str]) -> None:
    """Groups down to the kernel's, which holds a process; ``controllers`` offered per group."""
    path = root
    for part in KERNEL.strip("/").split("/"):
        path /= part
        path.mkdir()
        (path / "cgroup.procs").write_text("")
        (path / "cgroup.subtree_control").write_text("")
        (path / "cgroup.controllers").write_text(controllers.get(part, "cpu memory pids"))
    (path / "cgroup.procs").write_text("4242\n")


def test_the_unified_group_is_read_from_proc_self_cgroup():
    hybrid = "9:pids:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/session-3.scope\n"
    assert own_cgroup(hybrid) == "/user.slice/session-3.scope"
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/docker/abc\n1:cpu:/\n") is None  # cgroup v1 only, as on this host


def test_runs_go_under_the_lowest_empty_group_of_the_users_own(tmp_path):
    _tree(tmp_path, {})
    app = tmp_path / "user.slice/user-1001.slice/user@1001.service/app.slice"
    assert delegated_parent(tmp_path, KERNEL, os.getuid()) == app / PARENT
    (app / "cgroup.procs").write_text("77\n")  # v2 hands controllers down only from an empty group
    assert delegated_parent(tmp_path, KERNEL, os.getuid()) == app.parent / PARENT


def test_a_group_without_a_controller_is_passed_over(tmp_path):
    _tree(tmp_path, {"app.slice": "memory pids"})
    service = tmp_path / "user.slice/user-1001.slice/user@1001.service"
    assert delegated_parent(tmp_path, KERNEL, os.getuid()) == service / PARENT


def test_no_place_when_nothing_the_user_owns_qualifies(tmp_path):
    _tree(tmp_path, dict.fromkeys(KERNEL.strip("/").split("/"), "memory pids"))
    found = delegated_parent(tmp_path, KERNEL, os.getuid())  # the nearest group's reason
    assert isinstance(found, str) and found.endswith("app.slice is not given the cpu controller(s)"), found
    assert "no ancestor of this user's own" in str(delegated_parent(tmp_path, KERNEL, os.getuid() + 4242))
    assert "no ancestor" in str(delegated_parent(tmp_path, "/", os.getuid()))  # a container's own root
    assert "cannot read" in str(delegated_parent(tmp_path, "user.slice", os.getuid()))


def test_the_walk_stops_where_delegation_ends(tmp_path):
    require(os.geteuid() == 0, "needs root to give the upper groups another owner")
    _tree(tmp_path, {"app.slice": "memory pids", "user@1001.service": "memory pids"})
    for upper in ("user.slice", "user.slice/user-1001.slice"):
        os.chown(tmp_path / upper, 65534, 65534)  # systemd's: root owns the slices above the service
    (tmp_path / "user.slice/user-1001.slice/cgroup.controllers").write_text("cpu memory pids")
    found = delegated_parent(tmp_path, KERNEL, os.getuid())  # user-1001.slice offers all three, but is not ours
    assert isinstance(found, str) and "app.slice is not given the cpu" in found, found
    app = tmp_path / "user.slice/user-1001.slice/user@1001.service/app.slice"
    (app / "cgroup.controllers").write_text("cpu memory pids")
    assert delegated_parent(tmp_path, KERNEL, os.getuid()) == app / PARENT


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
