"""Kill -9 anywhere, in the normal suite: a short run of ``scripts/chaos`` (``tests/chaos.py``) per
backend. Every window of a run's life gets a kill at a moment drawn at random; after each, within
10 s, nothing of the dead kernel (or broker) is left and the store is whole.

As root: the process sandbox (a kill in every window), rootful Docker (half of them, drawn by the
seed), gVisor (a quarter), the broker and Ray (one head started for its rounds, a driver killed
in each). As the ordinary account (``scripts/test-as-user``, marker ``ordinary_user``): the
process sandbox and rootless Podman. The seed is printed (``-s`` shows it as it goes; a failure
repeats it with the command that replays the round); ``JX_CHAOS_SEED`` fixes it. The soak before
a release is ``scripts/chaos --rounds 500`` (docs/security.md).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil

import pytest
from chaos import WINDOWS, run, summary
from conftest import NO_NAMESPACES, require

pytestmark = pytest.mark.kernel

SEED = int(os.environ.get("JX_CHAOS_SEED") or secrets.randbelow(10**6))
ROOT = os.geteuid() == 0
USER = pytest.mark.ordinary_user


def _rounds(backend: str, per_window: float) -> int:
    """Rounds for about ``per_window`` kills per window: below one, a share of the windows drawn
    anew by each seed (the process sandbox has every window, so each run kills in all of them)."""
    return max(2, round(per_window * len(WINDOWS[backend])))


@pytest.mark.parametrize(
    ("backend", "rounds"),
    [
        pytest.param("process", _rounds("process", 1), marks=USER),
        pytest.param("docker" if ROOT else "podman", _rounds("docker", 0.5), marks=USER, id="container"),
        pytest.param("gvisor", _rounds("gvisor", 0.25)),
        pytest.param("broker", _rounds("broker", 1)),
        pytest.param("ray", _rounds("ray", 1)),
    ],
)
def test_a_kill_at_any_moment_leaves_nothing_and_the_store_whole(backend, rounds):
    _require(backend)
    done = run(SEED, rounds, [backend])
    failed = [r for r in done if r.left]
    assert not failed, f"seed {SEED}\n{summary(done)}\n" + "\n".join(
        f"{r.backend} round {r.number} ({r.victim} killed in {r.window!r} at {r.moment}): {r.left} — replay: "
        f"scripts/chaos --seed {SEED} --backend {r.backend} --round {r.number}"
        for r in failed
    )


# Rounds a soak found leaving something (docs/security.md), replayed as they ran: the same window
# and moment, as long as WINDOWS keeps its rows (a change of the table moves them: find them anew).
FOUND = [
    pytest.param("process", 2712, 33, "fork being made", id="fork-cgroup"),
    pytest.param("gvisor", 2712, 65, "cell returned (pool refills)", id="gvisor-starting-container"),
]


@pytest.mark.parametrize(("backend", "seed", "number", "window"), FOUND)
def test_the_rounds_a_soak_found_replay_clean(backend, seed, number, window):
    _require(backend)
    (found,) = run(seed, 1, [backend], only=number)
    assert found.window == window, f"WINDOWS changed: round {number} is now {found.window!r}; replay anew"
    assert not found.left, f"{found.window!r} at {found.moment}: {found.left}"


def _require(backend: str) -> None:
    if backend == "ray":
        require(ROOT, "root (Ray's rounds run as root: the ordinary account's legs are the process sandbox and Podman)")
        require(importlib.util.find_spec("ray") is not None, "Ray is not installed (pip install -e '.[ray]')")
    if backend in ("gvisor", "broker"):
        require(ROOT, f"root ({backend}: the ordinary account's legs are the process sandbox and Podman)")
    if backend in ("docker", "podman", "gvisor", "broker"):
        from jupyter_exec.backends.container import ContainerBackend

        if NO_NAMESPACES and backend == "podman":
            pytest.skip("no namespaces: no rootless engine can start here; the first pass tests it")
        availability = ContainerBackend.availability()
        require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    if backend == "gvisor":
        require(shutil.which("runsc") is not None, "gVisor (apt-get install runsc)")
