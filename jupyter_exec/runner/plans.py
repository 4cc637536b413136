"""What the host asks ``confine`` to do in the target: the typed ``Plan``.

The process and container backends build a plan, ``build_request`` carries it, and
``confine.confine`` applies it. The types live here, not in ``confine.py``: that file is
shipped beside the bootstrap and runs with the standard library alone, without even
``typing`` (it names these under ``TYPE_CHECKING``).
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["Mounts", "Plan", "Relay", "Rlimits"]

#: ``apply_rlimits``'s limits: bytes, seconds, counts ("as" is a keyword: hence this form).
#: ``nproc_more``: so many processes more than the user runs now (outside a user namespace).
Rlimits = TypedDict(
    "Rlimits",
    {
        "as": float | None,
        "cpu": float | None,
        "fsize": float | None,
        "nproc": float | None,
        "nproc_more": float | None,
        "nofile": float | None,
    },
    total=False,
)


class Mounts(TypedDict):
    """``private_mounts``'s arguments: the run's own mount namespace."""

    host_mount_ns: str  # the kernel's, where nothing may be mounted
    shm_size: int | None  # bytes of the run's /dev/shm (None: the kernel's default)
    mask: dict[str, list[str]]  # directory emptied -> the paths kept in it


class Relay(TypedDict):
    """``netrelay.start``'s arguments: a host-list run's way to its proxy gate."""

    socket: str  # the gate's Unix socket, as the sandbox sees it
    port: int  # where the relay listens on the sandbox's loopback (Landlock allows it alone)


class Plan(TypedDict, total=False):
    """The steps of ``confine``: one per key, skipped where the key is absent."""

    rlimits: Rlimits
    mounts: Mounts
    landlock: bool
    readable: list[str]  # for Landlock: read-only paths
    writable: list[str]  # for Landlock: writable paths
    seccomp: bool
    network: bool  # sockets allowed (Landlock's TCP rules, the seccomp filter)
    connect: bool  # connect() allowed without network: false where the host's sockets stay in view
    relay: Relay  # --network HOST,...: the relay to the proxy (TCP stream sockets to its port alone)
