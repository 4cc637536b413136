"""Settings reach runs (``%config``, ``JX_*``), the local backend, and ``doctor`` tells the truth."""

from __future__ import annotations

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
