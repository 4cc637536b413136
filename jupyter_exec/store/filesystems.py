"""Which filesystem holds the store, and so how SQLite may use it there.

SQLite's WAL mode keeps a shared-memory index (the ``-shm`` file, mapped into every
process) that only works between processes of one host: on a network filesystem two
hosts each see their own copy, and the file can be corrupted. The rollback journal
(``journal_mode=DELETE``) needs only POSIX locks, which NFS (lockd / NFSv4), SMB, Lustre
(mounted with ``flock``), GPFS, CephFS and GlusterFS carry between hosts. Some network
filesystems keep locks on the host that took them (sshfs, rclone, s3fs, 9p, NFS mounted
``nolock``): there no journal mode is safe from two hosts, so the database is kept on a
local disk instead (``store_location``) and ``doctor`` says so.

The filesystem is read from ``/proc/self/mountinfo`` (type and options, e.g. ``nolock``);
where there is none (not Linux) the store is treated as local.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Filesystem", "filesystem_of", "journal_mode", "local_store_root", "parse_mountinfo", "store_location"]

MOUNTINFO = Path("/proc/self/mountinfo")

#: Network filesystems that never pass a POSIX lock to the other hosts (types as the kernel names them).
_LOCAL_LOCKS_ONLY = frozenset(
    {
        "ncpfs",
        "9p",
        "afs",
        "coda",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.goofys",
        "fuse.davfs2",
    }
)

#: Filesystems whose files live on another machine: those above, and those whose locks reach
#: every host (NFS, SMB and Lustre unless their mount options say otherwise: ``shares_locks``).
NETWORK_TYPES = _LOCAL_LOCKS_ONLY | {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "ceph",
    "glusterfs",
    "beegfs",
    "orangefs",
    "pvfs2",
    "gfs2",
    "ocfs2",
    "fuse.glusterfs",
    "fuse.ceph",
    "fuse.ceph-fuse",
    "fuse.juicefs",
}


@dataclass(frozen=True)
class Filesystem:
    """One mount: its type (``ext4``, ``nfs4``, ``fuse.sshfs``), where it is, what it mounts, its options."""

    type: str
    mountpoint: str
    source: str
    options: frozenset[str]

    @property
    def network(self) -> bool:
        return self.type in NETWORK_TYPES

    @property
    def shares_locks(self) -> bool:
        """Whether a POSIX lock taken on one host holds on the others (False for local disks:
        there is no other host)."""
        if not self.network or self.type in _LOCAL_LOCKS_ONLY:
            return False
        if self.type in ("nfs", "nfs4"):
            return not ({"nolock", "local_lock=all", "local_lock=posix"} & self.options)
        if self.type in ("cifs", "smb3", "smbfs"):
            return "nobrl" not in self.options
        if self.type == "lustre":
            return "flock" in self.options  # the default (noflock) refuses locks; localflock keeps them local
        return True

    def describe(self) -> str:
        return f"{self.type} ({self.source} on {self.mountpoint})"


def parse_mountinfo(text: str) -> list[Filesystem]:
    """The mounts listed in a ``/proc/PID/mountinfo`` text, in its order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 6 or len(fields) < dash + 3:
            continue
        options = set(fields[5].split(",")) | set(fields[dash + 3].split(",") if len(fields) > dash + 3 else ())
        mounts.append(
            Filesystem(
                type=fields[dash + 1],
                mountpoint=_unescape(fields[4]),
                source=_unescape(fields[dash + 2]),
                options=frozenset(options),
            )
        )
    return mounts


def filesystem_of(path: Path, mountinfo: str | None = None) -> Filesystem | None:
    """The mount holding ``path`` (or, if it does not exist yet, its nearest existing parent);
    None where mounts cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    inside = str(where.resolve()).rstrip("/") + "/"
    best: Filesystem | None = None
    for mount in parse_mountinfo(mountinfo):  # later mounts hide earlier ones on the same point
        point = mount.mountpoint.rstrip("/") + "/"
        if inside.startswith(point) and (best is None or len(point) >= len(best.mountpoint.rstrip("/")) + 1):
            best = mount
    return best


def journal_mode(path: Path) -> str:
    """``wal`` on a local disk (readers never wait for a writer), ``delete`` on a network
    filesystem (a rollback journal: safe wherever POSIX locks are)."""
    found = filesystem_of(path)
    return "delete" if found is not None and found.network else "wal"


def store_location(data_dir: Path) -> tuple[Path, Filesystem | None]:
    """Where the store of ``data_dir`` lives: ``data_dir/runs.sqlite3``, unless ``data_dir`` is on
    a network filesystem that keeps locks on one host; then a directory of this machine's
    (``local_store_root``), and the filesystem that sent it there."""
    found = filesystem_of(data_dir)
    if found is None or not found.network or found.shares_locks:
        return Path(data_dir) / "runs.sqlite3", None
    digest = hashlib.sha256(str(Path(data_dir).absolute()).encode()).hexdigest()[:16]
    root = local_store_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # other users of the machine see nothing in it
    return root / digest / "runs.sqlite3", found


def local_store_root() -> Path:
    """This user's directory on this machine's disk for stores kept off a network filesystem:
    /var/tmp survives reboots where /tmp may not."""
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())
    return base / f"jupyter-exec-{os.getuid()}"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
