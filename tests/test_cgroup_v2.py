"""The process sandbox on cgroup v2 with systemd, as an ordinary user, through real kernels:
``--mem``, ``--pids`` and ``--cpus`` enforced and measured in both ways such a user gets a
cgroup per run, and ``%jx doctor`` saying exactly what holds there.

- ``delegated``: the kernel runs in a subtree delegated to it (a scope made with
  ``Delegate=yes``, the kernel in a leaf of it, as container runtimes place their
  processes), so runs get groups in that subtree;
- ``systemd``: the kernel runs in a login session (a part of the tree the user does not
  own), so each worker starts in a scope of its own that the user's manager makes.

The machines CI runs on have cgroup v1; ``scripts/vm-test`` runs these in a VM booted with
cgroup v2 and systemd, where ``JX_TEST_CGROUP_V2=1`` turns a host without them into a
failure. Elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import ast
import ctypes
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cpu_rate
import pytest
from conftest import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.cgroup_v2]

CGROUP = Path("/sys/fs/cgroup")
# The kernel in a scope delegated to it, moved into a leaf of that scope (a v2 group can
# hand controllers down only while it holds no process).
DELEGATED = (
    *("systemd-run", "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes", "--", "sh", "-c"),
    'leaf=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)/kernel; mkdir "$leaf" && echo $$ >"$leaf/cgroup.procs" '
    '&& exec "$@"',
    "kernel-in-a-leaf",
)
IN_THE_VM_LEG = os.environ.get("JX_TEST_CGROUP_V2") == "1"
SECCOMP = "%%sandbox --backend seccomp --timeout 300"
# The cell's own group, as the cell sees it (cgroup v2: one line, 0::PATH).
WHERE = "import pathlib\ngroup = pathlib.Path('/sys/fs/cgroup' + open('/proc/self/cgroup').read()[3:].strip())\n"


@dataclass
class Mode:
    name: str
    kernel: Kernel

    def kernel_group(self) -> Path:
        """The kernel's own group (a leaf of its delegated scope, or the login's)."""
        line = Path(f"/proc/{self.kernel.pid}/cgroup").read_text().strip()
        return CGROUP / line.removeprefix("0::").lstrip("/")


def _missing() -> str | None:
    """Why this host cannot run these tests, or None."""
    if not (CGROUP / "cgroup.controllers").exists():
        return "this host's cgroups are v1"
    if os.geteuid() == 0:
        return "root's runs get groups of root's own; these are an ordinary user's ways"
    if shutil.which("systemd-run") is None or "DBUS_SESSION_BUS_ADDRESS" not in os.environ:
        return "no systemd user session (systemd-run --user)"
    return None


@pytest.fixture(scope="module", params=["delegated", "systemd"])
def v2(request, tmp_path_factory):
    missing = _missing()
    if missing is not None:
        message = f"{missing}: scripts/vm-test runs these tests in a VM with cgroup v2 and systemd"
        if IN_THE_VM_LEG:
            pytest.fail(message)
        pytest.skip(message)
    if request.param == "systemd":  # the session's kernel, started where pytest runs: a login session
        yield Mode("systemd", request.getfixturevalue("kernel"))
        return
    kernel = Kernel(tmp_path_factory.mktemp("jx-data"), tmp_path_factory.mktemp("notebook"), launcher=DELEGATED)
    yield Mode("delegated", kernel)
    kernel.shutdown_leaving_nothing()


def landlock_abi() -> int:
    """The running kernel's Landlock ABI, asked directly (landlock_create_ruleset, x86_64)."""
    return max(ctypes.CDLL(None).syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)), 0)


def test_doctor_says_what_holds(v2):
    kernel = v2.kernel
    parent = v2.kernel_group().parent / "jupyter-exec"
    if v2.name == "delegated":
        assert kernel.offers(f"cgroup: cgroup v2, delegated to you: groups under {parent}"), kernel.doctor()
    else:
        assert kernel.offers("cgroup: cgroup v2, a systemd user scope per worker"), kernel.doctor()
    for option in ("--mem: the run's cgroup: memory without swap", "--pids: the run's cgroup", "--cpus: the run's"):
        assert kernel.offers(option), (option, kernel.doctor())
    assert kernel.offers("namespaces: pid, mount and net, inside a user namespace of your own"), kernel.doctor()
    assert kernel.offers(f"landlock abi {landlock_abi()}"), kernel.doctor()


def test_pids_bounds_forks_in_the_runs_own_group(v2):
    """A fork bomb under --pids 24 stops below 24 (the worker's own processes count too), in
    a group where doctor says runs get theirs, whose pids.max the cell reads as 24."""
    bomb = (
        "import os\nread, write = os.pipe()\nforks = 0\nwhile True:\n    try:\n        pid = os.fork()\n"
        "    except BlockingIOError:\n        break\n    if pid == 0:\n        os.close(write)\n"
        "        os.read(read, 1)\n        os._exit(0)\n    forks += 1\nos.close(write)\n"
    )
    cell = v2.kernel.run(f"{SECCOMP} --pids 24\n{WHERE}{bomb}forks, str(group), (group / 'pids.max').read_text()")
    assert cell.error is None, cell.error
    forks, group, pids_max = ast.literal_eval(cell.result_text)
    assert pids_max == "24\n" and 24 - 6 <= forks < 24, (forks, pids_max)
    if v2.name == "delegated":
        assert Path(group).parent == v2.kernel_group().parent / "jupyter-exec", group
    else:
        assert Path(group).name.startswith(f"jx-{v2.kernel.pid}-w") and group.endswith(".scope"), group


def test_mem_kills_an_allocation_above_it_and_reports_oom(v2):
    """200 MB in steps of 8 under --mem 64m: the cell says how far it got (the group holds a
    little of the worker's own too), then the kernel kills it and the run ends as oom."""
    fill = (
        "blocks = []\nfor step in range(1, 26):\n    block = bytearray(8 * 2**20)\n"
        "    block[::4096] = b'x' * 2048\n    blocks.append(block)\n"
        "    print(step * 8, flush=True)"
    )
    cell = v2.kernel.run(f"{SECCOMP} --mem 64m\n{fill}")
    assert cell.error is not None and cell.error["ename"] == "ResourceLimitError", cell.error
    assert v2.kernel.last_run()["status"] == "oom"
    reached = int(cell.stdout.split()[-1])
    assert 32 <= reached < 64, cell.stdout


def test_cpus_gives_that_share_of_the_cpu_rate_without_it(v2):
    """A CPU-bound cell under --cpus 0.5 gets 0.5 ± 0.15 of the CPU seconds per second the
    same cell gets without it, just before and after (see cpu_rate.py)."""
    cpu_rate.assert_halved(
        lambda options: float(v2.kernel.run(f"{SECCOMP} {options}\n{cpu_rate.SPIN}", check=True).result_text)
    )
