"""The containers' own seccomp profile, made from the process sandbox's deny list.

An engine applies one profile per container, and ours replaces its default, so this one
refuses the union of two lists:

- every call the process sandbox refuses (``runner.confine.deny_list``: one source of
  truth for both backends), among them io_uring, ``userfaultfd``, the keyrings,
  ``perf_event_open``, ``bpf``, ``unshare``/``setns`` and clones that make namespaces;
- the calls Docker's documented default profile blocks (``DOCKER_DEFAULT_BLOCKS``, written
  from its documentation's list of significant blocked calls), so the profile is never
  weaker than the default it replaces. Docker's default admits only the ``personality``
  values 0, 8, 0x20000 and 0x20008 (and the 0xffffffff query); ours refuses the
  flags that change the memory layout (ASLR off, a mapped page zero, executable data),
  the query included.

Everything else is allowed (a deny list, as in the process sandbox: ordinary code and its
imports keep working). A refused call fails with EPERM, so code that probes a call goes
on; ``clone3`` fails with ENOSYS, so libc falls back to ``clone``, where namespace flags
are refused. gVisor (``runsc --oci-seccomp``) applies the profile inside its sandbox but
reports every refusal as EPERM, so its variant leaves ``clone3`` to gVisor, which has
no ``clone3`` and answers ENOSYS itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jupyter_exec.runner.confine import deny_list

__all__ = [
    "DOCKER_DEFAULT_BLOCKS",
    "LAYOUT_PERSONALITY_FLAGS",
    "denied_calls",
    "profile",
    "profile_file",
    "profile_text",
]

#: The calls Docker's documentation lists as blocked by its default profile (by name; a name
#: an architecture lacks is skipped by the runtime).
DOCKER_DEFAULT_BLOCKS = frozenset(
    {
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "query_module",
        "quotactl",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setns",
        "settimeofday",
        "stime",
        "swapon",
        "swapoff",
        "sysfs",
        "_sysctl",
        "umount",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vm86",
        "vm86old",
    }
)

#: ``personality`` flags refused: ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO, ADDR_COMPAT_LAYOUT,
#: READ_IMPLIES_EXEC, ADDR_LIMIT_32BIT, ADDR_LIMIT_3GB.
LAYOUT_PERSONALITY_FLAGS = (0x0040000, 0x0100000, 0x0200000, 0x0400000, 0x0800000, 0x8000000)


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


def profile(*, gvisor: bool = False, arch: str | None = None) -> dict[str, Any]:
    """The profile as an engine reads it (Docker's JSON format). ``gvisor``: the variant for
    runsc, which leaves ``clone3`` to gVisor (see the module docstring)."""
    _, clone_flags = deny_list(arch)
    rules = [_refuse(sorted(denied_calls(arch)))]
    rules += [_refuse(["clone"], args=_bit_set(0, 1 << bit)) for bit in range(32) if clone_flags >> bit & 1]
    if not gvisor:
        rules.append(_refuse(["clone3"], errno.ENOSYS))
    rules += [_refuse(["personality"], args=_bit_set(0, flag)) for flag in LAYOUT_PERSONALITY_FLAGS]
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
