"""The containers' own seccomp profile, made from the process sandbox's deny list.

An engine applies one profile per container, and ours replaces its default, so this one
refuses the union of two lists:

- every call the process sandbox refuses (``runner.confine.deny_list``: one source of
  truth for both backends), among them io_uring, ``userfaultfd``, the keyrings,
  ``perf_event_open``, ``bpf``, ``modify_ldt``, ``unshare``/``setns`` and clones that make
  namespaces, and the sockets it refuses even with network (``confine.DENIED_SOCKETS``:
  AF_ALG, AF_VSOCK, netfilter netlink);
- every call Docker's current default profile refuses a container without capabilities (ours
  drop them all): ``DOCKER_DEFAULT_BLOCKS``, and its arguments: of ``personality`` only
  PER_LINUX, PER_LINUX32 and UNAME26 (its 0xffffffff query refused too), of ``socket``
  neither AF_ALG nor AF_VSOCK. A test compares this profile with a dated copy of the
  upstream one rule by rule (``tests/data/seccomp/``), so it is never weaker than the
  default it replaces.

Everything else is allowed (a deny list, as in the process sandbox: ordinary code and its
imports keep working). A refused call fails with EPERM, so code that probes a call goes
on; ``clone3`` fails with ENOSYS, so libc falls back to ``clone``, where namespace flags
are refused. Arguments the kernel reads as ``int`` are compared on their low 32 bits, so
high bits set by a raw ``syscall()`` do not slip past. gVisor (``runsc --oci-seccomp``)
applies the profile inside its sandbox but reports every refusal as EPERM, so its variant
leaves ``clone3`` to gVisor, which has no ``clone3`` and answers ENOSYS itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jupyter_exec.runner.confine import DENIED_SOCKETS, deny_list

__all__ = [
    "DOCKER_DEFAULT_BLOCKS",
    "PERSONALITIES",
    "denied_calls",
    "profile",
    "profile_file",
    "profile_text",
]

#: The calls Docker's default profile refuses a container without capabilities (by name; a name
#: an architecture lacks is skipped by the runtime).
DOCKER_DEFAULT_BLOCKS = frozenset(
    {
        "_sysctl",
        "acct",
        "add_key",
        "afs_syscall",
        "bpf",
        "chroot",
        "clock_adjtime",
        "clock_settime",
        "clock_settime64",
        "create_module",
        "delete_module",
        "fanotify_init",
        "file_getattr",
        "file_setattr",
        "finit_module",
        "get_kernel_syms",
        "get_mempolicy",
        "getpmsg",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "lsm_get_self_attr",
        "lsm_list_modules",
        "lsm_set_self_attr",
        "mbind",
        "migrate_pages",
        "mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "pidfd_getfd",
        "pivot_root",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "putpmsg",
        "query_module",
        "quotactl",
        "quotactl_fd",
        "reboot",
        "request_key",
        "security",
        "set_mempolicy",
        "set_mempolicy_home_node",
        "setdomainname",
        "sethostname",
        "setns",
        "settimeofday",
        "stime",
        "swapoff",
        "swapon",
        "sysfs",
        "syslog",
        "tuxcall",
        "umount",
        "umount2",
        "unshare",
        "uprobe",
        "uselib",
        "userfaultfd",
        "ustat",
        "vhangup",
        "vm86",
        "vm86old",
        "vserver",
    }
)

#: The ``personality`` bits allowed, in any combination: PER_LINUX32 and UNAME26 (PER_LINUX is 0).
#: Every other value is refused, among them the flags that change the memory layout (ASLR off,
#: a mapped page zero, executable data) and the 0xffffffff query.
PERSONALITIES = 0x0008 | 0x20000


def denied_calls(arch: str | None = None) -> frozenset[str]:
    """Every call the profile refuses outright: the process sandbox's and Docker's default's."""
    sandbox, _ = deny_list(arch)
    return sandbox | DOCKER_DEFAULT_BLOCKS


def _refuse(names: list[str], err: int = errno.EPERM, args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": err}
    if args:
        rule["args"] = args
    return rule


def _bit_set(index: int, bit: int) -> list[dict[str, Any]]:
    """The condition "argument ``index`` has ``bit`` set" (rules are OR-ed, conditions AND-ed)."""
    return [{"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}]


def _int_is(index: int, value: int) -> dict[str, Any]:
    """The condition "argument ``index``, read as the kernel reads an ``int``, is ``value``"."""
    return {"index": index, "value": 0xFFFFFFFF, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def _socket_rules() -> list[dict[str, Any]]:
    rules = []
    for family, protocol in DENIED_SOCKETS:
        args = [_int_is(0, family)] + ([] if protocol is None else [_int_is(2, protocol)])
        rules.append(_refuse(["socket"], args=args))
    return rules


def _personality_rules() -> list[dict[str, Any]]:
    """Refuse every value but combinations of ``PERSONALITIES``: above them, or any other bit below."""
    above = [{"index": 0, "value": PERSONALITIES, "op": "SCMP_CMP_GT"}]
    below = [1 << bit for bit in range(PERSONALITIES.bit_length()) if not PERSONALITIES >> bit & 1]
    return [_refuse(["personality"], args=above)] + [_refuse(["personality"], args=_bit_set(0, b)) for b in below]


def profile(*, gvisor: bool = False, arch: str | None = None) -> dict[str, Any]:
    """The profile as an engine reads it (Docker's JSON format). ``gvisor``: the variant for
    runsc, which leaves ``clone3`` to gVisor (see the module docstring)."""
    _, clone_flags = deny_list(arch)
    rules = [_refuse(sorted(denied_calls(arch)))]
    rules += [_refuse(["clone"], args=_bit_set(0, 1 << bit)) for bit in range(32) if clone_flags >> bit & 1]
    if not gvisor:
        rules.append(_refuse(["clone3"], errno.ENOSYS))
    rules += _personality_rules() + _socket_rules()
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}


def profile_text(*, gvisor: bool = False) -> str:
    """The profile as one line of JSON (what Docker takes in ``--security-opt seccomp=...``)."""
    return json.dumps(profile(gvisor=gvisor), separators=(",", ":"), sort_keys=True)


def profile_file(folder: Path, *, gvisor: bool = False) -> Path:
    """The profile written once into ``folder`` under a name of its content (for engines that take
    a path, as Podman's API does), readable by the engine's own user."""
    text = profile_text(gvisor=gvisor)
    path = folder / f"seccomp-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.exists():
        folder.mkdir(mode=0o711, parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(text)
        partial.chmod(0o644)
        os.replace(partial, path)
    return path
