"""``--shm``: which backends take the default, who refuses it, and the seccomp backend's
private ``/dev/shm`` where the host gives no mount namespace or the mount could land on
the kernel's own. (Sizes, privacy and memory accounting through a kernel are in
test_result_contract.py.)"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from conftest import require

from jupyter_exec.admission import BackendFacts, admit
from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.process import LocalBackend, SeccompBackend
from jupyter_exec.backends.process import backend as process
from jupyter_exec.backends.process.workers import Namespaces, namespace_support, namespaces
from jupyter_exec.backends.raycluster import RayBackend
from jupyter_exec.config import ExecConfig
from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.manager import Manager
from jupyter_exec.policy import Policy
from jupyter_exec.spec import Limits, RunSpec


def _host(monkeypatch, why_no_namespaces: str | None) -> None:
    """This host as it is, but with namespaces for workers or (``why_no_namespaces``) none."""
    found = namespaces() if why_no_namespaces is None else Namespaces(None, why=why_no_namespaces)
    real = process.guarantees
    monkeypatch.setattr(process, "guarantees", lambda confined: dataclasses.replace(real(confined), namespaces=found))


def test_the_default_shm_reaches_only_backends_that_keep_it(monkeypatch):
    """The manager applies a default only to the limits a backend enforces."""
    monkeypatch.delenv("JX_SHM", raising=False)
    assert ExecConfig().default_limits().shm == 64 * 2**20
    assert "shm" in ContainerBackend(ExecConfig(pool_size=0)).enforced_limits  # the container's own /dev/shm
    assert "shm" not in LocalBackend(ExecConfig(pool_size=0)).enforced_limits  # the host's /dev/shm
    assert "shm" not in RayBackend.enforced_limits
    with pytest.raises(BackendUnavailableError, match="cannot enforce shm limits"):
        admit(RunSpec(limits=Limits.parse(shm="8m")), BackendFacts.of(RayBackend(ExecConfig())), Policy(), Limits())
    if namespace_support() is None:
        _host(monkeypatch, None)
        assert "shm" in SeccompBackend(ExecConfig(pool_size=0)).enforced_limits
    _host(monkeypatch, "unshare refused: not root")
    assert "shm" not in SeccompBackend(ExecConfig(pool_size=0)).enforced_limits


def test_without_a_mount_namespace_shm_stays_read_only_and_shm_is_refused(monkeypatch, tmp_path):
    availability = SeccompBackend.availability()
    require(availability.ok, f"seccomp backend: {availability.reason} — {availability.fix}")
    _host(monkeypatch, "unshare refused: not root")
    manager = Manager(ExecConfig(data_dir=str(tmp_path), pool_size=0))
    try:
        with pytest.raises(PermissionError):  # Landlock: no writable /dev/shm, never the host's
            manager.run("open('/dev/shm/jx-test', 'w')", RunSpec(backend="seccomp"))
        with pytest.raises(BackendUnavailableError) as refused:
            manager.run("1", RunSpec(backend="seccomp", limits=Limits.parse(shm="8m")))
    finally:
        manager.shutdown()
    message = str(refused.value)
    assert "--shm cannot be enforced here: it needs a mount namespace" in message and "use --backend docker" in message
    assert "unshare refused: not root" in message and "\n" not in message


_MOUNT = """
import os, sys
from jupyter_exec.runner.confine import mount_private_shm
try:
    mount_private_shm(2**20, os.readlink('/proc/self/ns/mnt'))      # "the host's" namespace: refused
except PermissionError:
    print('refused', end=' ')
mount_private_shm(2**20, 'mnt:[0]')
st = os.statvfs('/dev/shm')
print(st.f_blocks * st.f_frsize)
"""


def test_the_mount_is_refused_in_the_kernels_own_mount_namespace():
    """Run in a throw-away mount namespace, so a broken guard cannot cover the host's /dev/shm."""
    require(os.geteuid() == 0 and namespace_support() is None, "needs root and new mount namespaces")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _MOUNT],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (0, f"refused {2**20}\n"), done.stderr
