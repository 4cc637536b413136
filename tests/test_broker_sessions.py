"""Sandbox sessions at the broker under faults: a kernel killed with sessions up, and the broker
restarted under them (the broker, the users and their kernels as in test_broker.py)."""

from __future__ import annotations

import json
import os
import signal
import time

import docker
import pytest
from containers import derived_image, kill_from_outside
from test_broker import SANDBOX, USER_LABEL, USERS, Broker, UserKernel, _can_run_brokers, _containers, _until, raw

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def broker():
    _can_run_brokers()
    made = Broker()
    yield made
    made.stop()


@pytest.fixture(scope="module")
def bob(broker):
    kernel = UserKernel(USERS[1], {"JX_BROKER": broker.address})
    yield kernel
    kernel.shutdown()


def _sessions(user: str) -> list[str]:
    """The ids of ``user``'s session containers at the broker."""
    return [c["Id"] for c in _containers(**{USER_LABEL: user}) if "session" in c["Labels"].get("jupyter-exec.run", "")]


def test_a_killed_kernels_sessions_end_within_ten_seconds_and_free_its_quota(broker, bob):
    """Alice's kernel holds two sessions (her whole quota of two runs); SIGKILLed, both containers go
    within 10 s, a run of hers then starts at once, and bob's session is untouched."""
    bob.run(f"{SANDBOX} --session kept\nmine = 'bob'", check=True)
    kernel = UserKernel(USERS[0], {"JX_BROKER": broker.address})
    try:
        for name in ("one", "two"):
            kernel.run(f"{SANDBOX} --session {name}\nx = 1", check=True)
        assert len(_sessions(USERS[0])) == 2
        os.kill(kernel.pid, signal.SIGKILL)
        killed = time.monotonic()
        while _sessions(USERS[0]) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert not _sessions(USERS[0]), "a session's container outlived its kernel by 10 s at the broker"
        (events,) = raw(USERS[0], broker, {"op": "run", "code": "'room'", "limits": {}})
        assert [e["t"] for e in events] == ["accepted", "running", "end"], events  # not queued: the quota is free
        assert bob.run(f"{SANDBOX} --session kept\nprint(mine)", check=True).stdout == "bob\n"
        dropped = [line for line in broker.audit_lines() if line["op"] == "lifeline" and line["decision"] == "dropped"]
        assert dropped[-1]["user"] == USERS[0] and dropped[-1]["reason"] == "ended 2 session(s), 0 run(s)"
    finally:
        kernel.client.stop_channels()
        bob.run("%jx end kept")


def test_a_broker_restarted_under_a_session_says_so_in_one_line(broker, bob):
    """The kernel's next cell in the session says it ended with the broker; nothing of it is left;
    the cell after starts it afresh."""
    bob.run(f"{SANDBOX} --session gone\nx = 1", check=True)
    assert _sessions(USERS[1])
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)
    broker.start()
    _until(lambda: not _sessions(USERS[1]), "no container of the old broker's session left")
    ended = bob.run(f"{SANDBOX} --session gone\nprint(x)")
    assert ended.error is not None and ended.error["traceback"] == [
        f"NodeFailedError: session gone ended with the broker at {broker.address} (it stopped or restarted); "
        f"run its first cell again to start it afresh  (run {bob.last_run()['id']}; full log: %jx logs "
        f"{bob.last_run()['id']})"
    ], ended.error
    assert ended.stdout == "" and bob.last_run()["status"] == "failed"
    again = bob.run(f"{SANDBOX} --session gone\nx = 2\nprint(x)", check=True)
    assert again.stdout == "2\n"
    assert json.loads(bob.records().get(bob.last_run()["id"])["details"])["broker_run"]
    bob.run("%jx end gone")


def test_a_session_killed_at_the_broker_says_so_in_its_next_cell(broker, bob):
    """Its container killed from outside: within 10 s nothing of it is left and its quota is free; the
    next cell says why in one line, by the kernel's own name of the session."""
    _until(lambda: not _sessions(USERS[1]), "the sessions of earlier tests gone")
    bob.run(f"{SANDBOX} --session hit\nkept = 1", check=True)
    (container,) = _sessions(USERS[1])
    kill_from_outside(docker.from_env(), container)
    _until(lambda: not _sessions(USERS[1]), "the killed session's container removed", 10)
    ended = bob.run(f"{SANDBOX} --session hit\nprint(kept)")
    run = bob.last_run()["id"]
    assert ended.error is not None and ended.error["traceback"] == [
        "NodeFailedError: session hit was killed (SIGKILL) and ended; run its first cell again to start it afresh"
        f"  (run {run}; full log: %jx logs {run})"
    ], ended.error
    assert bob.run(f"{SANDBOX} --session hit\nprint('kept' in globals())", check=True).stdout == "False\n"
    bob.run("%jx end hit")


def test_a_session_made_after_its_kernel_went_ends_with_its_first_cell(broker):
    """A kernel killed while its session was being made (a pip env builds for long at the broker)
    leaves no lifeline by the time the session is there, so the lifeline's end found nothing to end:
    the session ends with its first cell, not at the broker's exit."""
    _until(lambda: not _sessions(USERS[0]), "the sessions of earlier tests gone")
    (events,) = raw(
        USERS[0], broker, {"op": "run", "code": "x = 1", "limits": {}, "kernel": "kernel-gone", "session": "orphan"}
    )
    assert events[-1]["t"] == "end", events
    _until(lambda: not _sessions(USERS[0]), "the orphaned session's container removed", 10)


@pytest.fixture(scope="module")
def slow_boot():
    """An image whose python3 takes a minute to start."""
    client = docker.from_env()
    yield derived_image(
        client,
        "jupyter-exec/test-slow-boot",
        """RUN printf '#!/bin/sh\\nsleep 60\\nexec %s "$@"\\n' "$(command -v python3)" > /usr/local/sbin/python3""",
        "RUN chmod 755 /usr/local/sbin/python3",
    )
    client.images.remove("jupyter-exec/test-slow-boot", force=True)


def test_a_session_being_made_when_its_kernel_dies_stops_being_made(broker, slow_boot):
    """The kernel is SIGKILLed while its session's container boots (a minute, here): the broker
    stops making it at once, its container goes within a few seconds (it went only once made, and
    after its first cell), and its run is recorded cancelled."""
    _until(lambda: not _sessions(USERS[0]), "the sessions of earlier tests gone")
    before = len(broker.audit_lines())

    def ran() -> list[dict]:
        lines = broker.audit_lines()[before:]
        return [line for line in lines if line["op"] == "run" and line["user"] == USERS[0]]

    kernel = UserKernel(USERS[0], {"JX_BROKER": broker.address})
    try:
        kernel.start(f"{SANDBOX} --session slow --image {slow_boot}\nx = 1")
        _until(lambda: _sessions(USERS[0]), "the session's container made", 60)
        os.kill(kernel.pid, signal.SIGKILL)
        killed = time.monotonic()
        _until(lambda: not _sessions(USERS[0]), "the session's container removed", 10)
        assert time.monotonic() - killed < 5
        _until(ran, "its run's audit line")
        assert ran()[0]["status"] == "cancelled" and ran()[0]["image"] == slow_boot, ran()
    finally:
        kernel.client.stop_channels()
