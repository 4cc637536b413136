"""What the process backends can promise on this host, limit by limit.

The same backend keeps different promises as root, as an ordinary user with user
namespaces, and with no namespace at all (a container whose seccomp profile denies
``unshare``, ``user.max_user_namespaces=0``). This module is the one place that works
that out, so the limits a backend takes (``enforced_limits``), the refusal of those it
cannot keep, and what ``jupyter-exec doctor`` says can never disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyter_exec.limits import LIMITS

from .cgroups import CgroupMode, cgroup_mode
from .workers import Namespaces, namespaces

__all__ = ["Enforcement", "Guarantees", "guarantees"]

# The limits whose enforcement depends on the host; every other one is kept everywhere.
HOST_DEPENDENT = ("memory", "pids", "cpus", "shm", "network")


@dataclass(frozen=True)
class Enforcement:
    """How one limit is kept here (``how``), or why it cannot be (``how`` None): ``why`` in
    a few words, ``cause`` the host's own reason, ``fix`` what to do."""

    how: str | None
    why: str = ""
    cause: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Guarantees:
    """What a process backend promises on this host (``confined``: the seccomp backend)."""

    namespaces: Namespaces
    cgroup: CgroupMode
    root: bool
    confined: bool

    def limit(self, name: str) -> Enforcement:
        """How limit ``name`` (a ``Limits`` field) is kept; any but ``HOST_DEPENDENT`` always is."""
        return getattr(self, f"_{name}", lambda: Enforcement("always"))()

    def unenforced(self) -> frozenset[str]:
        return frozenset(name for name in HOST_DEPENDENT if self.limit(name).how is None)

    def refusal(self, name: str) -> str:
        """One line: the option, why this host cannot keep it, and the host's reason."""
        kept = self.limit(name)
        return f"{LIMITS[name].flag} cannot be enforced here: {kept.why}" + (f" ({kept.cause})" if kept.cause else "")

    def _memory(self) -> Enforcement:
        if self.cgroup.kind:
            return Enforcement("the run's cgroup: memory without swap, out-of-memory reported as oom")
        return Enforcement("RLIMIT_AS: address space per process, not resident memory")

    def _pids(self) -> Enforcement:
        if self.cgroup.kind:
            return Enforcement("the run's cgroup (pids.max)")
        if self.confined and self.namespaces.user and not self.root:  # root's processes are never counted
            return Enforcement("RLIMIT_NPROC in the run's own user namespace, which counts only the run's processes")
        if not self.root:
            return Enforcement(
                "RLIMIT_NPROC over every process of your uid on this machine, in other containers too, set to "
                "those running when the run starts plus --pids (approximate: one that ends meanwhile lets the run "
                "start one more, one that starts one fewer)"
            )
        return Enforcement(
            None,
            "RLIMIT_NPROC does not bind root, and there is no per-run cgroup",
            self.cgroup.detail,
            "use --backend docker, or run the kernel as a normal user",
        )

    def _cpus(self) -> Enforcement:
        if self.cgroup.kind:
            return Enforcement("the run's cgroup (a CPU quota)")
        return Enforcement(None, "it needs a per-run cgroup", self.cgroup.detail, "use --backend docker or drop --cpus")

    def _shm(self) -> Enforcement:
        if not self.confined:
            return Enforcement(
                None,
                "a local process shares the host's /dev/shm, so its size cannot be limited",
                fix="use --backend seccomp or docker",
            )
        if self.namespaces.available:
            counted = "counted in --mem" if self.cgroup.kind else "not counted in --mem, which is address space here"
            return Enforcement(f"a fresh tmpfs of that size at /dev/shm per run, {counted} (multiprocessing works)")
        return Enforcement(
            None,
            "it needs a mount namespace for the run's own /dev/shm; /dev/shm stays read-only, "
            "so multiprocessing does not work",
            self.namespaces.why,
            "use --backend docker, or a host that allows user namespaces",
        )

    def _network(self) -> Enforcement:
        """A host list (``--network HOST,...``): a network namespace holding only a relay to the proxy."""
        if not self.confined:
            return Enforcement(
                None,
                "a host list needs a sandbox; a local process shares the host's network",
                fix="use --backend seccomp or docker",
            )
        if not self.namespaces.available:
            return Enforcement(
                None,
                "a host list needs a network namespace of the run's own",
                self.namespaces.why,
                "use --backend docker, or a host that allows user namespaces",
            )
        return Enforcement(
            "a host list: a network namespace with loopback alone, and the kernel's proxy there, "
            "which checks every connection"
        )

    def notes(self) -> list[str]:
        """What ``doctor`` says: namespaces, the cgroup mode, each limit, what ends a run's processes."""
        ns = self.namespaces
        if not self.confined:
            space = "none (the local backend is not confined)"
        elif not ns.available:
            space = f"none ({ns.why}); seccomp and Landlock still apply"
        elif ns.user:
            space = "pid, mount and net, inside a user namespace of your own (your uid mapped to itself)"
        else:
            space = "pid, mount and net"
        cgroup = self.cgroup.detail if self.cgroup.kind else f"none ({self.cgroup.detail})"
        lines = [f"namespaces: {space}", f"cgroup: {cgroup}"]
        for name in HOST_DEPENDENT:
            kept = self.limit(name)
            flag = LIMITS[name].flag
            lines.append(f"{flag}: {kept.how}" if kept.how else f"{flag}: refused, {kept.why}")
        if self.confined and ns.available:
            lines.append("processes a run leaves: killed with its pid namespace; /tmp and /run hold only its own")
        else:
            lines.append("processes a run leaves: killed by its supervisor, a child subreaper (setsid ones too)")
            if self.confined:
                lines.append(
                    "sockets: with no mount namespace the host's socket files cannot be hidden, so connect() "
                    "is refused unless --network"
                )
        return lines


def guarantees(confined: bool) -> Guarantees:
    """This host's guarantees for the seccomp backend (``confined``) or the local one."""
    return Guarantees(namespaces(), cgroup_mode(), os.geteuid() == 0, confined)
