"""Sandbox containers: made, kept warm, handed out once, and always removed.

A ``Slot`` is one container plus the host folder bind-mounted read-only at ``/jx``: the
bootstrap and four FIFOs, ``protocol`` (bootstrap -> kernel), ``request`` (kernel ->
bootstrap), and the cell's ``stdout`` and ``stderr``. The protocol never shares a stream
with what the cell prints, so nothing printed can pass for a result; and output ends
exactly when the cell's processes do, with no round trip through the daemon's log
stream. A started container's bootstrap says ``ready`` and then blocks opening
``request``: a pooled slot is a Python already past start-up.

``ContainerPool`` keeps ``size`` started slots per key (image, limits, network, mounts),
each used for exactly one run; taking one starts a refill in the background. Every
container carries ``jupyter-exec.*`` labels (run, kernel, owner pid, boot id) so that
``reap_containers`` can remove what a dead kernel left behind.
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec._proc import pid_alive
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.protocol import BOOTSTRAP_PATH

from .engine import DEFAULT_RETRY, RetryPolicy, client, retry

__all__ = ["POOLED", "ContainerPool", "PoolKey", "Slot", "bind", "boot_id", "reap_containers"]

LABEL = "jupyter-exec"
POOLED = "pool"  # the run label of a pooled container not yet given a run
_SLOT_ROOT = Path(tempfile.gettempdir()) / f"jupyter-exec-docker-{os.getuid()}"
_COMMAND = "exec python3 -I /jx/bootstrap.py /jx/protocol /jx/request >/jx/stdout 2>/jx/stderr"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class PoolKey:
    """What fixes a container at creation: the same key means interchangeable containers."""

    image: str
    limits: Any  # spec.Limits without the timeout (enforced from the host)
    mounts: tuple[Any, ...]  # spec.Mount values


class Slot:
    """One container and its host folder. Used for one run, then ``discard``-ed."""

    def __init__(
        self,
        image: str,
        options: dict[str, Any],
        labels: dict[str, str],
        user: str,
        retry_policy: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.retry_policy = retry_policy
        _SLOT_ROOT.mkdir(mode=0o711, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="slot-", dir=_SLOT_ROOT))
        self.folder.chmod(0o755)
        shutil.copyfile(BOOTSTRAP_PATH, self.folder / "bootstrap.py")
        (self.folder / "bootstrap.py").chmod(0o644)
        uid, _, gid = user.partition(":")
        for name in ("protocol", "request", "stdout", "stderr"):
            os.mkfifo(self.folder / name, 0o600)
            if os.geteuid() == 0:
                os.chown(self.folder / name, int(uid), int(gid or uid))
        self.protocol_fd, self.stdout_fd, self.stderr_fd = (
            os.open(self.folder / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            for name in ("protocol", "stdout", "stderr")
        )
        self.ready_bytes = b""
        self.container: Any = None
        options = {**options, "mounts": [bind(self.folder, "/jx", True), *options.get("mounts", ())]}
        try:
            self.container = retry(
                lambda: client().containers.create(
                    image, ["/bin/sh", "-c", _COMMAND], labels=labels, user=user, detach=True, **options
                ),
                what="docker create",
                policy=retry_policy,
            )
        except BaseException:
            self.discard()
            raise

    def start(self) -> None:
        retry(self.container.start, what="docker start", policy=self.retry_policy)

    def wait_ready(self, timeout: float = 30.0) -> bytes:
        """Block until the bootstrap says ready; the protocol bytes read so far."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.ready_bytes:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.protocol_fd], [], [], max(left, 0))
            chunk = _read(self.protocol_fd) if readable else b""
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
                fd = os.open(self.folder / "request", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
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

    def alive(self) -> bool:
        """Still waiting for a request (its bootstrap has not ended)."""
        readable, _, _ = select.select([self.protocol_fd], [], [], 0)
        if not readable:
            return True
        chunk = _read(self.protocol_fd)
        self.ready_bytes += chunk or b""
        return chunk != b""

    def discard(self) -> None:
        """Remove the container (whatever its state) and the host folder."""
        try:
            if self.container is not None:
                retry(lambda: self.container.remove(force=True), what="docker rm", policy=self.retry_policy)
        except Exception as error:
            import docker.errors

            if not isinstance(error, docker.errors.NotFound):
                raise
        finally:
            for fd in (
                getattr(self, "protocol_fd", None),
                getattr(self, "stdout_fd", None),
                getattr(self, "stderr_fd", None),
            ):
                if fd is not None:
                    os.close(fd)
            shutil.rmtree(self.folder, ignore_errors=True)


def bind(source: Path, target: str, read_only: bool) -> Any:
    from docker.types import Mount

    return Mount(target=target, source=str(source), type="bind", read_only=read_only)


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


class ContainerPool:
    """Started slots per key, refilled in the background; ``discard`` runs off the caller's path."""

    def __init__(self, size: int, make: Callable[[PoolKey, str], Slot], max_keys: int = 4) -> None:
        self.size, self.make, self.max_keys = size, make, max_keys
        self._idle: OrderedDict[PoolKey, deque[Slot]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._filling: set[PoolKey] = set()
        self._refills: list[threading.Thread] = []
        self._trash: queue.Queue[Slot | None] = queue.Queue()
        self._janitor = threading.Thread(target=self._remove_loop, daemon=True, name="jx-docker-janitor")
        self._janitor.start()

    def take(self, key: PoolKey, run_label: str) -> Slot:
        """A started slot for ``key``: a warm one if there is one, else one made now for ``run_label``.

        The caller ``warm``-s the key once its run is over, so that making the next
        container never competes with the run for the CPU and the daemon.
        """
        slot = None
        with self._lock:
            idle = self._idle.get(key)
            if idle is not None:
                self._idle.move_to_end(key)
            while idle and slot is None:
                candidate = idle.popleft()
                if candidate.alive():
                    slot = candidate
                else:
                    self._trash.put(candidate)
        if slot is None:
            slot = self.make(key, run_label)
            try:
                slot.start()
            except BaseException:
                self.discard(slot)
                raise
        return slot

    def warm(self, key: PoolKey) -> None:
        """Fill the pool for ``key`` in the background (the oldest key beyond ``max_keys`` is emptied)."""
        if self.size <= 0:
            return
        with self._lock:
            if self._closed or key in self._filling:
                return
            self._filling.add(key)
            refill = threading.Thread(target=self._refill, args=(key,), daemon=True, name="jx-docker-refill")
            self._refills = [t for t in self._refills if t.is_alive()] + [refill]
            self._idle.setdefault(key, deque())
            self._idle.move_to_end(key)
            while len(self._idle) > self.max_keys:
                _, evicted = self._idle.popitem(last=False)
                for slot in evicted:
                    self._trash.put(slot)
            refill.start()

    def _refill(self, key: PoolKey) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed or key not in self._idle or len(self._idle[key]) >= self.size:
                        return
                slot = self.make(key, POOLED)
                try:
                    slot.start()
                except BaseException:
                    self.discard(slot)
                    raise
                with self._lock:
                    keep = not self._closed and key in self._idle
                    if keep:
                        self._idle[key].append(slot)
                if not keep:
                    slot.discard()  # made while the pool closed: the janitor may be gone
                    return
        except Exception:  # a failed refill only costs the next run its warm start
            return
        finally:
            with self._lock:
                self._filling.discard(key)

    def discard(self, slot: Slot) -> None:
        """Remove ``slot`` in the background."""
        self._trash.put(slot)

    def _remove_loop(self) -> None:
        while (slot := self._trash.get()) is not None:
            try:
                slot.discard()
            except Exception:  # reap_containers catches what could not be removed now
                pass

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._idle.values())

    def close(self, timeout: float = 60.0) -> None:
        """Remove every idle slot and wait for pending removals (and for refills under way)."""
        with self._lock:
            self._closed = True
        for refill in self._refills:
            refill.join(timeout)
        with self._lock:
            for slots in self._idle.values():
                for slot in slots:
                    self._trash.put(slot)
            self._idle.clear()
        self._trash.put(None)
        self._janitor.join(timeout)


def reap_containers() -> int:
    """Remove containers whose kernel is gone (its owner pid is dead on this boot). How many."""
    if "DOCKER_HOST" not in os.environ and not Path("/var/run/docker.sock").exists():
        return 0
    try:
        docker = client(timeout=10)
        containers = docker.api.containers(all=True, filters={"label": f"{LABEL}.kernel"})
    except Exception:  # no daemon, no SDK: nothing of ours can be running
        return 0
    this_boot, reaped = boot_id(), 0
    for container in containers:
        labels = container.get("Labels") or {}
        owner = labels.get(f"{LABEL}.owner-pid", "")
        same_boot = labels.get(f"{LABEL}.boot-id") == this_boot
        if same_boot and owner.isdigit() and pid_alive(int(owner)):
            continue
        if not same_boot and container.get("State") == "running":
            continue  # another machine's kernel sharing this daemon
        try:
            docker.api.remove_container(container["Id"], force=True)
            reaped += 1
        except Exception:  # already gone, or removal in progress elsewhere
            pass
    for folder in _SLOT_ROOT.glob("slot-*") if _SLOT_ROOT.exists() else ():
        if time.time() - folder.stat().st_mtime > 3600:
            shutil.rmtree(folder, ignore_errors=True)
    return reaped
