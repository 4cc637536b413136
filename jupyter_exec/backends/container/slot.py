"""One sandbox container and its host folder, bound to the kernel's life. Used once, then discarded.

The folder is bind-mounted read-only at ``/jx``: the bootstrap (with ``codec.py``,
``confine.py``, which sets the run's rlimits, ``netrelay.py``, a host-list run's way to its
gate, and the kernel's cloudpickle: ``ship_runner``), the ``lifeline`` FIFO, and ``out/``
with the FIFOs the container opens: ``request`` (kernel -> bootstrap), ``protocol``
(bootstrap -> kernel) and the cell's ``stdout`` and ``stderr``. The protocol never shares a
stream with what the cell prints, so nothing printed can pass for a result; and output ends
exactly when the cell's processes do, with no round trip through the engine's log stream.
gVisor refuses to open a FIFO for writing on a read-only mount, so under ``runsc`` ``out/``
is mounted again, writable (the folder stays the kernel's: the cell's uid cannot add files
to it).

The lifeline binds the container to its kernel: the kernel holds the only writing end
(opened before the container starts, close-on-exec, and the FIFO is read-only for
everyone, so nothing inside can open another). The bootstrap, pid 1 in the container,
exits when that end closes, whether the kernel discarded the slot or died; the engine
then removes the container (``auto_remove``) with everything in it. Until pid 1 runs,
nothing holds the lifeline, so the container is created through the kernel's keeper
(``keepers``), which removes it and the folder (named for the kernel's pid) if the kernel
dies first. A started container's bootstrap says ``ready`` and then blocks opening
``request``: a pooled slot is a Python already past start-up.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_exec.errors import NodeFailedError, TaskCancelledError
from jupyter_exec.runner.protocol import ship_runner

from . import keepers
from .engine import Engine
from .hostconfig import SLOT_ROOT, ContainerPlan, bind

__all__ = ["LIFELINE_VAR", "Slot", "gone", "stopped"]

LIFELINE_VAR = "JX_LIFELINE"  # where the bootstrap finds the lifeline (see runner/bootstrap.py)
# The FIFOs the container writes are opened read-write (``<>``), which never blocks: a plain
# open for writing waits for a reader, forever if the kernel died before the container started.
_COMMAND = "exec python3 -I /jx/bootstrap.py 3 /jx/out/request 3<>/jx/out/protocol 1<>/jx/out/stdout 2<>/jx/out/stderr"
_WRITTEN = ("protocol", "stdout", "stderr")
_STOP_LOOK = 0.1  # seconds between looks at a start's stop event while the container boots


def gone(error: BaseException) -> bool:
    """The engine says the container is not there (any more), or is being removed already."""
    import docker.errors

    if isinstance(error, docker.errors.NotFound):
        return True
    text = str(error).lower()
    return isinstance(error, docker.errors.APIError) and (
        "already in progress" in text or "no such container" in text or "does not exist" in text
    )


def stopped(error: BaseException) -> bool:
    """The engine refused to signal a container because it is not running (Docker: 409, Podman: 500)."""
    text = str(error).lower()
    return "is not running" in text or "can only kill running containers" in text


class Slot:
    """One container and its host folder (see the module docstring)."""

    def __init__(self, engine: Engine, image: str, plan: ContainerPlan, labels: dict[str, str], user: str) -> None:
        self.engine = engine
        self.made = time.time()  # a run's timeline tells a slot from the pool from one made for it
        self.gvisor = plan.gvisor
        self.container: Any = None
        self.ready_bytes = b""
        self._fds: list[int] = []  # ours to close: the readers' and the lifeline's
        keepers.keeper_of(engine)  # running before the folder is made: it removes the folder if we die
        SLOT_ROOT.mkdir(mode=0o711, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=keepers.slot_prefix(), dir=SLOT_ROOT))
        try:
            self._make_folder(user, engine.facts.rootless and plan.userns is None)
            self._create(image, plan, labels, user)
        except BaseException:
            self.discard()
            raise

    def _make_folder(self, user: str, mapped_away: bool) -> None:
        """``mapped_away``: the cell's uid is not ours on the host (a rootless engine without
        Podman's keep-id, i.e. rootless Docker), so only modes can let it open the FIFOs: they
        are then anyone's, in folders nobody else may list (their names are random)."""
        self.folder.chmod(0o711 if mapped_away else 0o755)
        out = self.folder / "out"
        out.mkdir(mode=0o711 if mapped_away else 0o755)
        ship_runner(self.folder)  # confine sets the rlimits; netrelay is a host-list run's way to its gate
        uid, _, gid = user.partition(":")
        for path in (*(out / name for name in _WRITTEN), out / "request"):
            os.mkfifo(path, 0o600)
            if mapped_away:
                path.chmod(0o666)
            elif os.geteuid() == 0:
                os.chown(path, int(uid), int(gid or uid))
        for name in _WRITTEN:
            self._fds.append(os.open(out / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        self.protocol_fd, self.stdout_fd, self.stderr_fd = self._fds
        lifeline = self.folder / "lifeline"
        os.mkfifo(lifeline, 0o600)
        self._fds.append(os.open(lifeline, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
        lifeline.chmod(0o444)  # opened for writing once, by us; never again, by anyone inside

    def _create(self, image: str, plan: ContainerPlan, labels: dict[str, str], user: str) -> None:
        client = self.engine.client
        mounts = [bind(self.folder, "/jx", True), *plan.host.get("mounts", ())]
        if plan.gvisor:
            mounts.insert(1, bind(self.folder / "out", "/jx/out", False))
        host = client.api.create_host_config(**{**plan.host, "mounts": mounts})
        if plan.userns:
            host["UsernsMode"] = plan.userns  # the SDK accepts only "host" here; Podman takes keep-id
        created = self.engine.retry(
            lambda: keepers.create(
                self.engine,
                image,
                ["/bin/sh", "-c", _COMMAND],
                user=user,
                labels=labels,
                environment={**plan.environment, LIFELINE_VAR: "/jx/lifeline"},
                working_dir="/tmp",
                host_config=host,
                stop_signal="SIGKILL",  # nothing to stop gracefully: Podman's rm -f waits for it otherwise
                detach=True,
            ),
            "create the container",
        )
        self.container = client.containers.prepare_model({"Id": created["Id"]})

    def start(self) -> None:
        self.engine.retry(self.container.start, "start the container")

    def wait_ready(self, timeout: float = 60.0, stop: threading.Event | None = None) -> bytes:
        """Block until the bootstrap says ready; the protocol bytes read so far. ``stop`` set meanwhile
        ends the wait (``TaskCancelledError``) within ``_STOP_LOOK`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.ready_bytes:
            left = deadline - time.monotonic()
            look = max(left, 0) if stop is None else min(max(left, 0), _STOP_LOOK)
            readable, _, _ = select.select([self.protocol_fd], [], [], look)
            if stop is not None and stop.is_set():
                raise TaskCancelledError("cancelled while its sandbox container started")
            chunk = _read(self.protocol_fd) if readable else None
            if chunk == b"" or left <= 0:
                raise NodeFailedError(f"the sandbox container did not start: {self._why()}")
            self.ready_bytes += chunk or b""
        return self.ready_bytes

    def _why(self) -> str:
        try:
            self.container.reload()
            logs = self.container.logs(tail=20).decode(errors="replace").strip()
            return (
                f"{self.container.status}, exit {self.container.attrs['State'].get('ExitCode')}: {logs or 'no output'}"
            )
        except Exception as error:  # the answer is for a message only
            return f"cannot inspect it ({error})"

    def send_request(self, request: bytes, timeout: float = 10.0) -> None:
        """Write the request into the FIFO the bootstrap is opening, then close it (EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.folder / "out" / "request", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as error:  # ENXIO: the bootstrap has not opened it yet
                if time.monotonic() > deadline:
                    raise NodeFailedError(f"the sandbox did not take its request: {error}") from error
                time.sleep(0.001)
        try:
            os.set_blocking(fd, True)
            view = memoryview(request)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if self.gvisor:
            self._until_taken(deadline)

    def _until_taken(self, deadline: float) -> None:
        """gVisor's gofer keeps a reader of every FIFO it has looked at, so our write can land before
        the bootstrap starts to open the request, and that open then waits for a writer that came
        and went. Opening the FIFO again wakes it; the bootstrap has taken the request once the pipe
        is empty (a session's later cell says nothing on the protocol channel until it ends)."""
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.folder / "out" / "request", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return  # no reader left: the bootstrap has read the request and closed it
            try:
                left = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)
            finally:
                os.close(fd)
            if not left:
                return
            time.sleep(0.01)

    def alive(self) -> bool:
        """Still waiting for a request (its bootstrap has not ended)."""
        readable, _, _ = select.select([self.protocol_fd], [], [], 0)
        if not readable:
            return True
        chunk = _read(self.protocol_fd)
        self.ready_bytes += chunk or b""
        return chunk != b""

    def discard(self) -> None:
        """Let go of the lifeline, remove the container (whatever its state), remove the folder.

        The lifeline goes first: its pid 1 then ends the container itself, which under gVisor is
        the quick way (gVisor cannot kill a process blocked opening a host FIFO, as an idle
        container's is, and the engine's kill would wait ten seconds for it)."""
        if self._fds:
            os.close(self._fds.pop())  # the lifeline, opened last
        if self.gvisor and self.container is not None:
            try:
                self.container.wait(timeout=5, condition="removed")  # pid 1 reads the lifeline twice a second
            except Exception:  # still there (or the engine is away): removed by force below
                pass
        try:
            if self.container is not None:
                self.engine.retry(lambda: self.container.remove(force=True), "remove the container")
        except Exception as error:
            if not gone(error):
                raise
        finally:
            while self._fds:
                os.close(self._fds.pop())
            shutil.rmtree(self.folder, ignore_errors=True)


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
