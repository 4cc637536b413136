"""Room on the disks the store and the logs live on.

Two guards keep a full disk from costing a run its record. Before a run starts, ``Room.check``
refuses it in one line when the data directory has less than ``min_free`` bytes free (nothing
ran, nothing is lost). During a run, the disk may still fill (the cell's own output, another
program): a ballast file next to the store (``Reserve``, 1 MiB) is given back the moment a
write of the store finds the disk full, so the run's row can still be finished; it is made
again once there is room.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from jupyter_exec.errors import StoreError
from jupyter_exec.units import format_bytes

__all__ = ["DISK_FULL", "RESERVE_BYTES", "Reserve", "Room", "free_bytes", "no_room"]

RESERVE_BYTES = 1 << 20

#: The errors of a write that found no room: no space, over quota, over the file-size limit.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def free_bytes(directory: Path) -> int:
    """Bytes an ordinary process may still write under ``directory`` (or its nearest existing parent)."""
    where = Path(directory)
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def no_room(directory: Path, free: int, wanted: int = 0) -> StoreError:
    """The one-line error for a disk too full to record runs."""
    under = f", under the {format_bytes(wanted)} jupyter-exec keeps free (ExecConfig.min_free_space)" if wanted else ""
    return StoreError(
        f"no room to record a run: {directory} has {format_bytes(free)} free{under}; make room "
        "(`jupyter-exec envs gc` removes unused runtime envs) or set JX_DATA_DIR to a disk with space",
        Path(directory),
    )


class Reserve:
    """A ballast file beside the store, released when a store write finds the disk full."""

    def __init__(self, store_path: Path) -> None:
        self.path = Path(store_path).with_name(Path(store_path).name + ".reserve")

    def ensure(self, min_free: int) -> None:
        """Make the ballast if it is missing and the disk has room for it beyond ``min_free``."""
        if self.path.exists() or free_bytes(self.path.parent) < min_free + 2 * RESERVE_BYTES:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another kernel made it first
            return
        except OSError:
            return  # no room or no right to make it: the store works without one
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)  # blocks really taken, not a sparse promise
        except OSError:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        os.close(fd)

    def release(self) -> bool:
        """Give the ballast back to the disk; whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class Room:
    """The free-space guard of one kernel: the directories it writes records to, and the
    store's ballast."""

    def __init__(self, directories: list[Path], reserve: Reserve) -> None:
        self.directories = list(dict.fromkeys(Path(d) for d in directories))
        self.reserve = reserve

    def check(self, min_free: int) -> None:
        """Refuse (``StoreError``) a run when a directory has under ``min_free`` bytes free (0: never);
        remake the ballast when there is room."""
        if min_free <= 0:
            return
        for directory in self.directories:
            free = free_bytes(directory)
            if free < min_free:
                raise no_room(directory, free, min_free)
        self.reserve.ensure(min_free)
