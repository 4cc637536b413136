"""Warm sandbox containers, each handed out once and always removed; and the reaper.

``ContainerPool`` keeps ``size`` started slots (``slot.Slot``: a container past Python's
start-up) per key (image, limits, network, mounts, runtime), each used for exactly one
run; the caller refills a key in the background once its run is over, and while a key's
cells come faster than containers are made the pool makes them ahead, several at once, as
many as the cells use up meanwhile (``demand``), up to a cap. Every container
carries ``jupyter-exec.*`` labels (run, kernel, owner pid, boot id). A container dies with
its kernel (the slot's lifeline, and before it starts the kernel's keeper: ``keepers``);
``reap_containers`` is the second line, run when a kernel starts: it removes what a dead
kernel left on any engine this user reaches.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec._proc import pid_alive

from . import keepers
from .demand import Demand
from .hostconfig import SLOT_ROOT
from .slot import Slot

__all__ = ["POOLED", "ContainerPool", "PoolKey", "boot_id", "reap_containers"]

LABEL = "jupyter-exec"
POOLED = "pool"  # the run label of a pooled container not yet given a run
_PARALLEL = 3  # slots of one key made at once (the engine makes containers in parallel)
_WAIT_FOR_MADE = 30.0  # seconds a take waits for a slot being made before making its own


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
    runtime: str | None = None  # the OCI runtime (None: the engine's default)


class ContainerPool:
    """Started slots per key, made ahead of demand; ``discard`` runs off the caller's path.

    A key keeps ``size`` slots warm (``ExecConfig.pool_size``); while its cells come faster
    than a container can be made, as many as they use up meanwhile (``Demand``), up to
    ``most`` (``DockerConfig.pool_max``, under the policy's ``warm_containers``), made up to
    ``_PARALLEL`` at a time. ``take`` hands out a warm slot; with none warm but some on their
    way it waits for the first of those, and only with neither does it make one for the caller.
    """

    def __init__(self, size: int, make: Callable[[PoolKey, str], Slot], max_keys: int = 4, most: int = 0) -> None:
        self.size, self.make, self.max_keys = size, make, max_keys
        self.most = max(size, most)
        self._idle: OrderedDict[PoolKey, deque[Slot]] = OrderedDict()
        self._making: dict[PoolKey, int] = {}
        self._demand: dict[PoolKey, Demand] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a slot was made (or failed to be)
        self._closed = False
        self._makers: list[threading.Thread] = []
        self._trash: queue.Queue[Slot | None] = queue.Queue()
        self._janitor = threading.Thread(target=self._remove_loop, daemon=True, name="jx-docker-janitor")
        self._janitor.start()

    def take(self, key: PoolKey, run_label: str) -> Slot:
        """A started slot for ``key``: a warm one, else the first of those being made, else one
        made now for ``run_label``.

        The caller ``warm``-s the key once its run is over, so that for cells typed seconds
        apart making the next container never competes with the run for the CPU and the
        engine; when cells come faster than that, the pool makes the next ones now, ahead.
        """
        slot, asked = None, time.monotonic()
        with self._ready:
            demand = self._demand.setdefault(key, Demand(self.size, self.most))
            while slot is None:
                idle = self._idle.get(key)
                if idle is not None:
                    self._idle.move_to_end(key)
                while idle and slot is None:
                    candidate = idle.popleft()
                    if candidate.alive():
                        slot = candidate
                    else:
                        self._trash.put(candidate)
                if slot is not None or not self._making.get(key) or self._closed:
                    break
                if time.monotonic() - asked > _WAIT_FOR_MADE:
                    break
                self._ready.wait(_WAIT_FOR_MADE)
        made = None
        if slot is None:
            started = time.monotonic()
            slot = self.make(key, run_label)
            try:
                slot.start()
            except BaseException:
                self.discard(slot)
                raise
            made = time.monotonic() - started
        with self._lock:
            if made is not None:
                demand.made(made)
            demand.took(waited=time.monotonic() - asked)
            ahead = demand.target() > self.size
        if ahead:
            self.warm(key)
        return slot

    def warm(self, key: PoolKey) -> None:
        """Make slots for ``key`` in the background, up to what its demand wants (the oldest key
        beyond ``max_keys`` is emptied)."""
        if self.size <= 0:
            return
        with self._lock:
            if self._closed:
                return
            self._idle.setdefault(key, deque())
            self._idle.move_to_end(key)
            while len(self._idle) > self.max_keys:
                evicted_key, evicted = self._idle.popitem(last=False)
                self._demand.pop(evicted_key, None)
                for slot in evicted:
                    self._trash.put(slot)
            wanted = self._demand.setdefault(key, Demand(self.size, self.most)).target()
            making = self._making.get(key, 0)
            more = min(wanted - len(self._idle[key]) - making, _PARALLEL - making)
            if more <= 0:
                return
            self._making[key] = making + more
            makers = [
                threading.Thread(target=self._make_one, args=(key,), daemon=True, name="jx-docker-refill")
                for _ in range(more)
            ]
            self._makers = [t for t in self._makers if t.is_alive()] + makers
        for maker in makers:
            maker.start()

    def _make_one(self, key: PoolKey) -> None:
        """Make one slot for ``key``'s idle queue, then top the key up again if it still wants more."""
        started, slot = time.monotonic(), None
        try:
            slot = self.make(key, POOLED)
            slot.start()
        except Exception:  # a failed refill only costs the next run its warm start
            if slot is not None:
                self.discard(slot)
            slot = None
        with self._ready:
            self._making[key] -= 1
            keep = slot is not None and not self._closed and key in self._idle
            if keep:
                assert slot is not None
                self._idle[key].append(slot)
                self._demand[key].made(time.monotonic() - started)
            self._ready.notify_all()
        if slot is not None and not keep:
            slot.discard()  # made while the pool closed: the janitor may be gone
        if keep:
            self.warm(key)

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

    def ahead_count(self) -> int:
        """Slots warm or being made: what cells arriving now will not wait for."""
        with self._lock:
            return sum(len(q) for q in self._idle.values()) + sum(self._making.values())

    def close(self, timeout: float = 60.0) -> None:
        """Remove every idle slot and wait for pending removals (and for slots being made)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for maker in self._makers:
            maker.join(timeout)
        with self._lock:
            for slots in self._idle.values():
                for slot in slots:
                    self._trash.put(slot)
            self._idle.clear()
        self._trash.put(None)
        self._janitor.join(timeout)


def reap_containers(urls: Iterable[str]) -> int:
    """Remove containers whose kernel is gone (its owner pid is dead on this boot) from the
    engines at ``urls`` that answer. How many."""
    try:
        import docker
    except ImportError:  # no SDK: no container of ours was made from this environment
        return 0
    this_boot, reaped = boot_id(), 0
    for url in urls:
        try:
            client = docker.DockerClient(base_url=url, version="1.41", timeout=10)
            containers = client.api.containers(all=True, filters={"label": f"{LABEL}.kernel"})
        except Exception:  # nothing answers there: nothing of ours can be running there
            continue
        for container in containers:
            labels = container.get("Labels") or {}
            owner = labels.get(f"{LABEL}.owner-pid", "")
            same_boot = labels.get(f"{LABEL}.boot-id") == this_boot
            if same_boot and owner.isdigit() and pid_alive(int(owner)):
                continue
            if not same_boot and container.get("State") == "running":
                continue  # another machine's kernel sharing this engine
            try:
                client.api.remove_container(container["Id"], force=True)
                reaped += 1
            except Exception:  # already gone, or removal in progress elsewhere
                pass
        client.close()
    keepers.sweep()
    for folder in SLOT_ROOT.glob("slot-*") if SLOT_ROOT.exists() else ():
        try:
            stale = time.time() - folder.stat().st_mtime > 3600
        except OSError:
            continue  # removed meanwhile by the kernel that made it
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
    return reaped
