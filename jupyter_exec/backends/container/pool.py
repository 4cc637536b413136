"""Warm sandbox containers, each handed out once and always removed; and the reaper.

``ContainerPool`` keeps ``size`` started slots (``slot.Slot``: a container past Python's
start-up) per key (image, limits, network, mounts, runtime), each used for exactly one
run; the caller refills a key in the background once its run is over. Every container
carries ``jupyter-exec.*`` labels (run, kernel, owner pid, boot id). A container dies with
its kernel (the slot's lifeline); ``reap_containers`` is the second line, run when a
kernel starts: it removes what a dead kernel left on any engine this user reaches.
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

from .hostconfig import SLOT_ROOT
from .slot import Slot

__all__ = ["POOLED", "ContainerPool", "PoolKey", "boot_id", "reap_containers"]

LABEL = "jupyter-exec"
POOLED = "pool"  # the run label of a pooled container not yet given a run


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
    for folder in SLOT_ROOT.glob("slot-*") if SLOT_ROOT.exists() else ():
        try:
            stale = time.time() - folder.stat().st_mtime > 3600
        except OSError:
            continue  # removed meanwhile by the kernel that made it
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
    return reaped
