"""Settings reach runs (``%config``, ``JX_*``), the local backend, and ``doctor`` tells the truth."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
from conftest import Kernel

from jupyter_exec.config import ExecConfig
from jupyter_exec.spec import Limits


def test_defaults_come_from_environment(monkeypatch):
    monkeypatch.setenv("JX_TIMEOUT", "7s")
    monkeypatch.setenv("JX_MEM", "")
    monkeypatch.setenv("JX_POOL_SIZE", "0")
    config = ExecConfig()
    assert config.default_limits() == Limits(timeout=7.0, pids=256, fsize=2**30, shm=64 * 2**20)
    assert config.pool_size == 0


@pytest.mark.kernel
def test_a_bad_jx_value_is_refused_naming_its_variable(tmp_path):
    bad = Kernel(tmp_path / "data", tmp_path, env={"JX_MEM": "lots"})
    try:
        assert bad.refused("%%sandbox --backend local\nprint('ran')") == (
            "JX_MEM: cannot read 'lots' as a size; write it like 512m, 2g or 1.5GiB"
        )
        bad.run("%config ExecConfig.mem = '1g'", check=True)  # set otherwise, the variable is not read
        assert bad.run("%%sandbox --backend local\nprint('ran')", check=True).stdout == "ran\n"
    finally:
        bad.shutdown()


def test_doctor_cli_tells_the_truth():
    done = subprocess.run([sys.executable, "-m", "jupyter_exec.cli", "doctor"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   seccomp" in done.stdout and "landlock abi" in done.stdout
    # root here: a mount namespace per worker, a cgroup per run
    assert "--shm: a fresh tmpfs of that size at /dev/shm per run" in done.stdout
    assert "--pids: the run's cgroup (pids.max)" in done.stdout and "--cpus: the run's cgroup" in done.stdout
    assert "ok   local" in done.stdout


@pytest.mark.kernel
def test_config_magic_changes_the_default_limits(kernel):
    kernel.run("%config ExecConfig.timeout = '1s'", check=True)
    try:
        cell = kernel.run("%%sandbox --backend seccomp\nimport time\ntime.sleep(10)")
        assert cell.error["ename"] == "TaskTimeoutError" and "1 s" in cell.error["evalue"]
    finally:
        kernel.run("%config ExecConfig.timeout = '10m'", check=True)


@pytest.mark.kernel
def test_local_backend_runs_with_limits_but_no_confinement(kernel, notebook_dir):
    (notebook_dir / "visible.txt").write_text("plain subprocess")
    cell = kernel.run("%%sandbox --backend local\nopen('" + str(notebook_dir / "visible.txt") + "').read()", check=True)
    assert cell.result_text == "'plain subprocess'"
    assert kernel.last_run()["isolation"] == "subprocess"
    cell = kernel.run("%%sandbox --backend local --timeout 1\nwhile True:\n    pass")
    assert cell.error["ename"] == "TaskTimeoutError"
    cell = kernel.run("%%sandbox --backend local --shm 8m\nprint('ran')")  # the host's /dev/shm: no size
    assert cell.stderr.startswith("UsageError: local backend unavailable: --shm") and "ran" not in cell.stdout


# Run doctor under a seccomp filter refusing Landlock's first call with an errno: EPERM as the
# default profiles of Docker before 20.10.18 and containerd before 1.6 refuse all three, ENOSYS
# as profiles with that default answer (and as a kernel without Landlock would).
_WITHOUT_LANDLOCK = """
import ctypes, struct, sys
from jupyter_exec.cli import main
load_nr, refuse_landlock, allow = (0x20, 0, 0, 0), (0x15, 0, 1, 444), (0x06, 0, 0, 0x7FFF0000)
errno = (0x06, 0, 0, 0x50000 | {errno})
program = b"".join(struct.pack("HBBI", *insn) for insn in (load_nr, refuse_landlock, errno, allow))
filters = ctypes.create_string_buffer(program)
fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs
assert libc.prctl(22, 2, ctypes.create_string_buffer(fprog), 0, 0) == 0  # PR_SET_SECCOMP, a filter
sys.exit(main(["doctor"]))
"""


@pytest.mark.parametrize(
    ("answer", "reason", "fix"),
    [
        (errno.EPERM, "a seccomp filter on this process refuses Landlock", "a newer runtime's default does"),
        (errno.ENOSYS, "no Landlock, or a seccomp filter on this process refuses it", "a container profile that"),
    ],
)
def test_doctor_says_when_a_seccomp_filter_refuses_landlock(answer, reason, fix):
    """The seccomp backend is unavailable, and doctor names the cause and its fix."""
    code = _WITHOUT_LANDLOCK.format(errno=answer)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    seccomp = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["seccomp"])
    assert lines[seccomp].startswith("FAIL seccomp ") and reason in lines[seccomp], done.stdout + done.stderr
    assert fix in lines[seccomp + 1], done.stdout
    assert "%%sandbox uses: seccomp" not in done.stdout
