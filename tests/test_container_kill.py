"""A kernel SIGKILLed while its pool makes a container leaves no container behind, in any state,
without another kernel starting to reap it: the kernel's keeper (``backends/container/keepers``)
removes it.

Run as root, the engine is rootful Docker; run as an ordinary user (``scripts/test-as-user``
runs this module as ``jx-user``: marker ``ordinary_user``), the user's rootless Podman. The
moment between create and start is made exact by holding the kernel inside ``Slot.start``,
before it asks the engine to start the container it has just created; the kernel is then
killed as the OOM killer would kill it. The moment a create is on its way is made exact with
the keeper alone, a stand-in kernel and an engine slowed down in front.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from subprocess import PIPE

import docker
import pytest
from conftest import NO_NAMESPACES, Kernel, owned_processes, require
from containers import containers

from jupyter_exec.backends.container import ContainerBackend, DockerConfig, keepers
from jupyter_exec.backends.container.engine import container_events
from jupyter_exec.backends.container.hostconfig import SLOT_ROOT
from jupyter_exec.config import ExecConfig

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
if NO_NAMESPACES:  # scripts/test-as-user's second pass: a rootless engine needs a user namespace
    pytest.skip("no namespaces: no rootless engine can start here; the first pass tests it", allow_module_level=True)

CELL = "%%sandbox --backend container\nprint('done')"
# Run in the kernel: its next ``Slot.start`` first says which container it is about to start,
# then waits until the test kills the kernel, never starting it. (Not a SIGSTOP of the kernel: once
# in CI, as the ordinary account, the container a stopped kernel was about to start was found
# running, so the kernel had gone on; a thread that never returns cannot.)
STOP_BEFORE_START = """
import os, threading
from jupyter_exec.backends.container.slot import Slot
def _never_start(slot):
    with open({marker!r} + '.part', 'w') as said:
        said.write(slot.container.id)
    os.rename({marker!r} + '.part', {marker!r})
    threading.Event().wait()
Slot.start = _never_start
"""


@pytest.fixture(scope="module")
def engine():
    """The engine a kernel of this user picks: rootful Docker as root, rootless Podman otherwise."""
    availability = ContainerBackend.availability()
    require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    engine = ContainerBackend(ExecConfig(pool_size=0)).engine
    facts = engine.facts
    if os.geteuid() == 0:
        require(facts.kind == "docker" and not facts.rootless, f"as root, auto picked {facts.describe()}")
    else:
        require(facts.kind == "podman" and facts.rootless, f"auto picked {facts.describe()}, not rootless Podman")
    return engine


def _kill(kernel: Kernel) -> float:
    os.kill(kernel.pid, signal.SIGKILL)
    killed = time.monotonic()
    kernel.client.stop_channels()
    kernel.km.cleanup_resources()
    return killed


def _left_behind(engine, pid: int) -> list[str]:
    """What of the kernel ``pid`` is still there: its containers (any state), the processes started
    for it, its slot folders."""
    left = [f"container {c['Id'][:12]} ({c['State']})" for c in containers(engine.client, owner_pid=str(pid))]
    left += [f"process {p}" for p in owned_processes(pid)]
    return left + [f"folder {f.name}" for f in SLOT_ROOT.glob(f"slot-{pid}-*")]


def _assert_nothing_left(engine, pid: int, killed: float) -> None:
    while (left := _left_behind(engine, pid)) and time.monotonic() - killed < 10:
        time.sleep(0.2)
    assert not left, f"10 s after the kernel was killed: {left}"


def test_a_kernel_killed_between_create_and_start_leaves_no_container(engine, tmp_path):
    doomed = Kernel(tmp_path / "data", tmp_path)
    pid, marker = doomed.pid, tmp_path / "created"
    try:
        doomed.run(CELL, check=True)  # the pool is made, and refills
        # The kernel stops at the refill's start, or at the next one: the one after this run.
        doomed.client.execute(STOP_BEFORE_START.format(marker=str(marker)))
        doomed.client.execute(CELL)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the kernel never came to start a container"
        about_to_start = marker.read_text()  # read first: another thread may make and wait too
        states = {c["Id"]: c["State"] for c in containers(engine.client, owner_pid=str(pid))}
        assert states.get(about_to_start) == "created", states
    finally:
        killed = _kill(doomed)
    _assert_nothing_left(engine, pid, killed)


def test_a_kernel_killed_as_its_cell_returns_leaves_no_container(engine, tmp_path):
    """The cell's return sets the pool making the next container: the kill lands while it is being
    created or started (as the issue found it, every time)."""
    for attempt in range(4):
        doomed = Kernel(tmp_path / f"data-{attempt}", tmp_path)
        pid = doomed.pid
        try:
            doomed.run(CELL, check=True)
        finally:
            killed = _kill(doomed)
        _assert_nothing_left(engine, pid, killed)


def _slow_engine(path: Path, engine: str, pause: float) -> tuple[threading.Event, bytearray, socket.socket]:
    """The real engine at ``engine``, behind a socket at ``path`` that holds the first connection's
    request for ``pause`` seconds, as a busy engine takes that long to make a container. The
    event is set once that connection's answer has been passed back, and the bytes hold that
    answer; close the socket when done."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)
    answered, answer = threading.Event(), bytearray()

    def pipe(source: socket.socket, sink: socket.socket, copy: bytearray | None = None) -> None:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
            if copy is not None:
                copy.extend(chunk)
        sink.shutdown(socket.SHUT_WR)

    def serve(client: socket.socket, first: bool) -> None:
        with client, socket.socket(socket.AF_UNIX) as upstream:
            upstream.connect(engine)
            if first:
                time.sleep(pause)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            pipe(upstream, client, answer if first else None)
            if first:
                answered.set()

    def accept() -> None:
        for count in itertools.count():
            try:
                client = listener.accept()[0]
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=serve, args=(client, count == 0), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return answered, answer, listener


def test_a_create_in_flight_when_the_kernel_dies_is_heard_out_then_removed(engine):
    """The keeper alone, with a stand-in kernel that sends a create through it and dies while a slow
    engine works on it: the keeper waits for the engine's answer, then removes the container it
    made and the kernel's folders, and exits, within 10 s."""
    kernel = subprocess.Popen(["sleep", "300"])
    work = Path(tempfile.mkdtemp(prefix="jx-keeper-"))  # short: a socket's path has 108 bytes at most
    leftover, token = work / "slot-of-the-kernel", f"test-{secrets.token_hex(4)}"
    leftover.mkdir()
    answered, answer, slow = _slow_engine(work / "engine.sock", engine.url.removeprefix("unix://"), pause=2.0)
    command = [sys.executable, "-I", str(keepers.KEEPER_PATH), str(work / "engine.sock"), str(work)]
    keeper = subprocess.Popen([*command, str(kernel.pid), f"{keepers.MARK}={token}", str(leftover)], stdout=PIPE)
    try:
        word, own = keeper.stdout.readline().decode().split()
        assert word == "ready" and Path(own).parent == work
        relay = Path(own) / "relay.sock"
        body = json.dumps({"Image": DockerConfig().image, "Cmd": ["true"], "Labels": {keepers.MARK: token}}).encode()
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(relay))
            connection.sendall(
                b"POST /containers/create HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            time.sleep(0.2)  # the keeper has passed it on
            kernel.kill()
        keeper.wait(10)
        assert answered.is_set(), "the keeper went on before the engine answered"
        status, _, body = bytes(answer).partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 201"), bytes(answer)  # made after the kernel died, then removed:
        made = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])["Id"]
        with pytest.raises(docker.errors.NotFound):
            engine.client.api.inspect_container(made)
        assert containers(engine.client, keeper=token) == []
        assert not leftover.exists() and not Path(own).exists()
    finally:
        kernel.kill()
        kernel.wait()
        keeper.kill()
        slow.close()
        shutil.rmtree(work, ignore_errors=True)
        for left in containers(engine.client, keeper=token):  # only if the test failed: no reaper knows them
            engine.client.api.remove_container(left["Id"], force=True)


def test_a_keeper_that_died_is_started_again_with_the_same_token(engine):
    """A keeper killed while its kernel lives is started again by the next create, with the same
    token: what was made through the first is still the kernel's, and the second removes it too."""
    made = [keepers.create(engine, DockerConfig().image, ["true"], labels={"jupyter-exec.test": "keeper"})]
    try:
        first = keepers._keepers[engine.url]
        first.process.kill()
        first.process.wait()
        made.append(keepers.create(engine, DockerConfig().image, ["true"], labels={"jupyter-exec.test": "keeper"}))
        second = keepers._keepers[engine.url]
        assert second.process.pid != first.process.pid and second.token == first.token
        assert not os.path.exists(first.folder)  # where the first listened
        assert {c["Id"] for c in containers(engine.client, keeper=first.token)} == {m["Id"] for m in made}
    finally:
        for container in made:
            engine.client.api.remove_container(container["Id"], force=True)


def test_a_killed_containers_end_is_read_from_the_engines_log_at_any_moment(engine):
    """How a session's container ended is read from the engine's log at once, whenever it is
    asked: here a moment before a second turns, when Podman's file log, given ``until`` that
    moment, stopped reading before it reached the end (a session killed from outside was said
    "lost its container", not "killed"; an OOM kill could go unseen)."""
    api = engine.client.api
    made = api.create_container(DockerConfig().image, ["sleep", "60"], labels={"jupyter-exec.test": "events"})
    try:
        started = time.time()
        api.start(made["Id"])
        api.kill(made["Id"], "SIGKILL")
        api.wait(made["Id"], timeout=10)
        time.sleep((0.97 - time.time() % 1) % 1)
        actions = {
            event.get("Action") or event.get("status") for event in container_events(engine, made["Id"], started)
        }
        assert actions & {"die", "died"}, actions
    finally:
        api.remove_container(made["Id"], force=True)


KEEPER_STARTS = """
import sys
from jupyter_exec.backends.container import ContainerBackend, keepers
from jupyter_exec.config import ExecConfig
engine = ContainerBackend(ExecConfig(pool_size=0)).engine
engine.client.api.version()  # connected before the clock starts
print("go", flush=True)
keepers.keeper_of(engine)
sys.stdin.read()
"""


def test_a_kernel_killed_while_its_keeper_starts_leaves_no_keeper_folder(engine):
    """The kill lands at moments across the keeper's start (the chaos run found a folder left when
    it came between the folder's making and the keeper holding the kernel)."""
    for delay in (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.2, 0.4):
        kernel = subprocess.Popen([sys.executable, "-c", KEEPER_STARTS], stdin=PIPE, stdout=PIPE)
        assert kernel.stdout is not None and kernel.stdout.readline() == b"go\n"
        time.sleep(delay)
        kernel.kill()
        kernel.wait()
        killed = time.monotonic()
        while (left := _keeper_left(kernel.pid)) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert not left, f"10 s after a kill {delay} s into the keeper's start: {left}"


def _keeper_left(pid: int) -> list[str]:
    """The keeper folders and keeper processes of the kernel ``pid``."""
    left = [f"folder {f.name}" for f in SLOT_ROOT.glob(f"keeper-{pid}-*")]
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if str(keepers.KEEPER_PATH).encode() in argv and str(pid).encode() in argv:
            left.append(f"keeper process {entry.name}")
    return left
