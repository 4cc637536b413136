"""Hostile system calls as one cell: each made raw, by its x86_64 number, so no library stands
between the cell and the filter; the cell's value maps each call to the errno it got (or what
it returned, had it been let through). The hostile tests of every backend run it."""

from __future__ import annotations

#: The calls, as the arguments of ``libc.syscall`` in the cell (``ctypes`` is imported there).
CALLS = {
    "io_uring_setup": "(425, 4, ctypes.create_string_buffer(120))",
    "userfaultfd": "(323, 0)",
    "keyctl": "(250, 0, 0)",
    "perf_event_open": "(298, ctypes.create_string_buffer(128), 0, -1, -1, 0)",
    "bpf": "(321, 0, ctypes.create_string_buffer(128), 128)",
    "unshare(CLONE_NEWUSER)": "(272, 0x10000000)",
    "clone(CLONE_NEWUSER)": "(56, 0x10000000 | 17, 0, 0, 0, 0)",  # | SIGCHLD
    # the third wave: x86 segments, the hypervisor's vsock, the kernel's crypto, the firewall
    "modify_ldt": "(154, 1, ctypes.create_string_buffer(16), 16)",  # write an (empty) LDT entry
    "socket(AF_VSOCK)": "(41, 40, 1, 0)",
    "socket(AF_ALG)": "(41, 38, 5, 0)",
    "socket(AF_NETLINK, NETLINK_NETFILTER)": "(41, 16, 3, 12)",
    "socket(AF_VSOCK) with high bits": "(41, ctypes.c_long(1 << 32 | 40), 1, 0)",  # the kernel reads an int
}
THIRD_WAVE = [name for name in CALLS if name.startswith(("modify_ldt", "socket"))]


def cell(names: list[str]) -> str:
    """The cell that makes ``names`` (keys of ``CALLS``); its value: {name: errno name}."""
    calls = ",\n".join(f"    {name!r}: {CALLS[name]}" for name in names)
    return f"""import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
calls = {{
{calls},
}}
refused = {{}}
for name, (nr, *args) in calls.items():
    result = libc.syscall(nr, *args)
    if result == 0 and name.startswith('clone'):
        os._exit(0)  # the child of a clone that was let through
    if result > 0 and name.startswith('socket'):
        os.close(result)
    refused[name] = errno.errorcode.get(ctypes.get_errno(), '?') if result == -1 else f'returned {{result}}'
refused
"""
