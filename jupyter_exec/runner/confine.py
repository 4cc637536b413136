"""Confine the current process before it runs a cell: stdlib only, runs inside the target.

Applied by the bootstrap in this order, while the process is still single-threaded
(Landlock and seccomp bind the calling thread and what it later creates):

1. resource limits (``setrlimit``),
2. private mounts when the process has a mount namespace of its own: a fresh tmpfs of
   the run's size at ``/dev/shm``, and ``/tmp`` and ``/run`` emptied but for the run's
   own paths (Landlock does not stop a ``connect`` to a socket file, so the host's
   sockets there — D-Bus, Docker's, the user's systemd, ssh and gpg agents, X11 — must
   not be there to find). Mounting needs the privileges the next steps take away
   (Landlock forbids mounts, capabilities go, the filter denies ``mount``),
3. Landlock: the system and the Python installation read-only, the run's scratch
   directory, its ``/dev/shm`` and its mounts as given, nothing else of the user's files,
   and (ABI >= 6) no signals to processes outside the sandbox,
4. capabilities dropped whenever the process has any: root's, or those an ordinary user
   holds inside a user namespace of its own,
5. ``no_new_privs`` and a seccomp BPF denylist, built here by hand so no binding has to
   be imported (``pyseccomp`` costs ~50 ms a run); under Landlock before ABI 3 (Linux
   6.1 and older, as Debian 12's), which does not govern ``truncate``, it refuses that too.

Each step reports what it did or why it could not, so the host can say so instead of
pretending. The host asks for the steps with a ``Plan`` (``plans``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct

# ``typing`` is for type checkers only: importing it would cost every sandboxed run a few
# milliseconds (annotations are not evaluated, see the __future__ import).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .plans import Plan, Rlimits

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

# --- syscall numbers ------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Calls a notebook cell has no business making. Names missing from an arch are skipped.
_SYSCALLS = {
    "x86_64": {
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "mount": 165,
        "umount2": 166,
        "unshare": 272,
        "setns": 308,
        "pivot_root": 155,
        "chroot": 161,
        "kexec_load": 246,
        "kexec_file_load": 320,
        "bpf": 321,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "open_by_handle_at": 304,
        "name_to_handle_at": 303,
        "swapon": 167,
        "swapoff": 168,
        "reboot": 169,
        "acct": 163,
        "iopl": 172,
        "ioperm": 173,
        "open_tree": 428,
        "move_mount": 429,
        "open_tree_attr": 467,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "quotactl": 179,
        "settimeofday": 164,
        "clock_settime": 227,
        "adjtimex": 159,
        "clock_adjtime": 305,
        "vhangup": 153,
        "uselib": 134,
        "lookup_dcookie": 212,
        "modify_ldt": 154,  # x86's own segments: a kernel attack surface (CVE-2015-5157) no cell needs
        # handled with argument checks below
        "socket": 41,
        "connect": 42,
        "clone": 56,
        "clone3": 435,
        # refused only where Landlock cannot (ABI < 3)
        "truncate": 76,
        # used by this module itself
        "capset": 126,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
    "aarch64": {
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "mount": 40,
        "umount2": 39,
        "unshare": 97,
        "setns": 268,
        "pivot_root": 41,
        "chroot": 51,
        "kexec_load": 104,
        "kexec_file_load": 294,
        "bpf": 280,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "open_by_handle_at": 265,
        "name_to_handle_at": 264,
        "swapon": 224,
        "swapoff": 225,
        "reboot": 142,
        "acct": 89,
        "open_tree": 428,
        "move_mount": 429,
        "open_tree_attr": 467,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "fspick": 433,
        "mount_setattr": 442,
        "quotactl": 60,
        "settimeofday": 170,
        "clock_settime": 112,
        "adjtimex": 171,
        "clock_adjtime": 266,
        "vhangup": 58,
        "lookup_dcookie": 18,
        "socket": 198,
        "connect": 203,
        "truncate": 45,
        "clone": 220,
        "clone3": 435,
        "capset": 91,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
}
_SPECIAL = {
    "socket",
    "connect",
    "clone",
    "clone3",
    "truncate",
    "capset",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
}
_CLONE_NEW_NAMESPACES = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
_X32_SYSCALL_BIT = 0x40000000
AF_UNIX, AF_NETLINK, AF_ALG, AF_VSOCK = 1, 16, 38, 40
NETLINK_NETFILTER = 12
#: Sockets refused even with network, as (family, protocol or None for any): the kernel's crypto
#: (AF_ALG), the hypervisor's services (AF_VSOCK reaches the VM host's) and the firewall's
#: netlink (nftables). Only the low 32 bits count: the kernel reads these arguments as ``int``.
DENIED_SOCKETS = ((AF_ALG, None), (AF_VSOCK, None), (AF_NETLINK, NETLINK_NETFILTER))


def machine() -> str:
    return platform.machine()


def has_seccomp_filter() -> bool:
    """Whether this module can build a seccomp filter for this machine's architecture."""
    return machine() in _AUDIT_ARCH


def _nr(name: str) -> int:
    return _SYSCALLS[machine()][name]


def _syscall(name: str, *args: object) -> int:
    result: int = _libc.syscall(_nr(name), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


# --- rlimits --------------------------------------------------------------------------


def apply_rlimits(limits: Rlimits) -> None:
    """``{"as": bytes, "cpu": seconds, "fsize": bytes, "nproc": n, "nofile": n}``; no cores.

    ``"nproc_more": n`` allows ``n`` processes more than this user runs now: outside a
    user namespace of its own, ``RLIMIT_NPROC`` counts every process of the user (their
    JupyterLab, kernels, ...), so a plain ``n`` would let nothing start, or let a bomb
    take what the rest of their work needs. "Now" is the kernel's own count (``nproc_in_use``)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    names = {
        "as": resource.RLIMIT_AS,
        "cpu": resource.RLIMIT_CPU,
        "fsize": resource.RLIMIT_FSIZE,
        "nproc": resource.RLIMIT_NPROC,
        "nproc_more": resource.RLIMIT_NPROC,
        "nofile": resource.RLIMIT_NOFILE,
    }
    for key, value in limits.items():
        if not isinstance(value, (int, float)):  # None: no limit
            continue
        soft = int(value) + (nproc_in_use() if key == "nproc_more" else 0)
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later if it is caught.
        hard = soft + 1 if key == "cpu" else soft
        resource.setrlimit(names[key], (soft, hard))


_NO_PROGRAM = "/proc/self/jx-no-such-program"  # nothing can be made in /proc


def user_task_count() -> int:
    """Processes and threads of this process's user that ``/proc`` shows here."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass  # gone meanwhile
    return count


def nproc_in_use() -> int:
    """The tasks ``RLIMIT_NPROC`` counts against this uid now, as the kernel counts them: also
    those ``/proc`` does not show, in other containers of the same uid (a hub's users are all
    uid 1000). Found by making a child under trial limits (possible while the count is below the
    limit), from what ``/proc`` shows: one child where that is all. The child is a ``posix_spawn``
    (a vfork, tens of microseconds) of no program, reaped by libc when its exec fails. Call it
    before anything else in this process can start a task: it lowers this process's limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    top = 1 << 62 if hard == resource.RLIM_INFINITY else hard

    def spawns_under(limit: int) -> bool:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, hard))
        try:
            os.waitpid(os.posix_spawn(_NO_PROGRAM, [_NO_PROGRAM], {}), 0)
        except BlockingIOError:
            return False  # EAGAIN: at the limit
        except FileNotFoundError:
            pass  # made, and gone
        return True

    try:
        seen = user_task_count()
        if seen >= top or spawns_under(seen + 1):
            return seen
        low, step = seen + 1, 1  # the count is at least low (no child under it), below high
        while True:
            high = min(low + step, top)
            if spawns_under(high):
                break
            if high == top:
                return top  # at the hard limit already: nothing more can start
            low, step = high, step * 2
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if spawns_under(middle) else (middle, high)
        return low
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))


# --- private mounts -------------------------------------------------------------------

SHM_PATH = "/dev/shm"
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384


def _mount(source: str, target: str, fstype: str | None, flags: int, options: str | None, host_mount_ns: str) -> None:
    """``mount(2)``, refused unless this process is in a mount namespace other than the
    host's ``host_mount_ns``: nothing may ever land on the host's own tree."""
    if os.readlink("/proc/self/ns/mnt") == host_mount_ns:
        raise OSError(errno.EPERM, f"no private mount namespace: {target} would be the host's")
    _syscall(
        "mount",
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        options.encode() if options else None,
    )


def mount_private_shm(size: int | None, host_mount_ns: str) -> str:
    """A fresh tmpfs over ``/dev/shm``, ``size`` bytes (None: the kernel's default), as
    Docker mounts it (nosuid, nodev, noexec). It goes away with the namespace, i.e. with
    the run."""
    options = "mode=1777" + (f",size={size}" if size is not None else "")
    _mount("jx-shm", SHM_PATH, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options, host_mount_ns)
    return f"private /dev/shm ({options})"


def private_mounts(host_mount_ns: str, shm_size: int | None, mask: dict[str, list[str]]) -> list[str]:
    """The run's own ``/dev/shm``, and each directory of ``mask`` covered by an empty read-only
    tmpfs, the paths listed for it (the run's scratch directory, its mounts) bound back at
    their own place: the host's files and sockets there are gone, the run's own are not."""
    notes = [mount_private_shm(shm_size, host_mount_ns)]
    for top, keep in mask.items():
        # Opened before ``top`` is covered: afterwards their paths lead into the new tmpfs.
        kept: list[tuple[str, int]] = []
        for path in sorted(keep):
            if not any(path.startswith(k + "/") for k, _ in kept):
                try:
                    kept.append((path, os.open(path, os.O_PATH | os.O_CLOEXEC)))
                except FileNotFoundError:
                    pass
        try:
            _mount("jx-empty", top, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "mode=755,size=64k", host_mount_ns)
            for path, fd in kept:
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.makedirs(path, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None, host_mount_ns)
            flags = _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            _mount("jx-empty", top, None, flags, None, host_mount_ns)
        finally:
            for _, fd in kept:
                os.close(fd)
        notes.append(f"{top} of its own")
    return notes


# --- Landlock -------------------------------------------------------------------------

_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_FILE_RIGHTS_V1 = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE
_LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 14, 1 << 15
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1, 2
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1, 2


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; where Landlock cannot be used, minus the errno of the
    answer: ``EOPNOTSUPP`` off at boot, ``ENOSYS`` not in this kernel (or unknown here), ``EPERM``
    refused by a seccomp filter (as older container runtimes' default profiles refuse it)."""
    if machine() not in _SYSCALLS:
        return -errno.ENOSYS
    result = int(_libc.syscall(_nr("landlock_create_ruleset"), None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    return result if result > 0 else -ctypes.get_errno()


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # v1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= _LL_TRUNCATE
    if abi >= 5:
        rights |= _LL_IOCTL_DEV
    return rights


def apply_landlock(readable: list[str], writable: list[str], network: bool) -> str:
    """Restrict file access to the given trees. Returns a note of what was done."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError(-abi, f"Landlock cannot be used here: {os.strerror(-abi)}")
    handled = _fs_rights(abi)
    read = _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR
    file_only = _LL_FILE_RIGHTS_V1 | (_LL_TRUNCATE if abi >= 3 else 0) | (_LL_IOCTL_DEV if abi >= 5 else 0)
    if abi >= 6:
        attr = struct.pack(
            "QQQ",
            handled,
            0 if network else _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP,
            _LL_SCOPE_SIGNAL | (0 if network else _LL_SCOPE_ABSTRACT_UNIX),
        )
    elif abi >= 4:
        attr = struct.pack("QQ", handled, 0 if network else _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP)
    else:
        attr = struct.pack("Q", handled)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _syscall("landlock_create_ruleset", buffer, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    try:
        for paths, access in ((readable, read), (writable, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                try:
                    allowed = access if os.path.isdir(path) else access & file_only
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                    _syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0))
                finally:
                    os.close(fd)
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return f"landlock abi {abi}"


# --- capabilities ---------------------------------------------------------------------


def has_capabilities() -> bool:
    """Whether this process holds any capability: as root, or inside a user namespace of
    its own (where an ordinary uid holds them all, over what that namespace owns)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("CapEff:", "CapPrm:", "CapAmb:")) and int(line.split()[1], 16):
                return True
    return False


def drop_capabilities() -> None:
    """Leave the process without privileges: empty bounding, ambient and process sets."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = 40
    for cap in range(last + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two zeroed cap_user_data structs
    _syscall("capset", ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24))


# --- seccomp --------------------------------------------------------------------------

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG2 = 0, 4, 16, 32


def deny_list(arch: str | None = None) -> tuple[frozenset[str], int]:
    """What ``seccomp_program`` refuses, for other filters built from the same list (the container
    backend's seccomp profile): the calls refused outright with EPERM on ``arch`` (default: this
    machine's), and the ``clone`` flags that get a clone refused (CLONE_NEW*). ``clone3`` gets
    ENOSYS, so libc falls back to ``clone``; ``socket`` and ``connect`` are refused only without
    network (a container has a network namespace of its own for that)."""
    table = _SYSCALLS[arch or machine()]
    return frozenset(name for name in table if name not in _SPECIAL), _CLONE_NEW_NAMESPACES


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(network: bool, connect: bool = True, truncate: bool = True) -> bytes:
    """A BPF denylist: EPERM for dangerous calls and namespace-creating clones, EACCES for
    non-UNIX sockets (with ``network``: for ``DENIED_SOCKETS`` only); ENOSYS for clone3 so libc falls back to clone.
    ``connect=False`` refuses every ``connect`` (where the host's socket files cannot be
    hidden from the process and Landlock does not cover connecting to them);
    ``truncate=False`` refuses ``truncate`` by path (where Landlock is older than ABI 3,
    which does not govern it: any file of the user's could be emptied; ``ftruncate`` of a
    file the run could open for writing is unaffected)."""
    arch = machine()
    table = _SYSCALLS[arch]
    denied = sorted(nr for name, nr in table.items() if name not in _SPECIAL)
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _insn(_BPF_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        _insn(_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_BPF_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch == "x86_64":
        prog += [_insn(_BPF_JGE_K, 0, 1, _X32_SYSCALL_BIT), _insn(_BPF_RET_K, 0, 0, eperm)]
    for nr in denied:
        prog += [_insn(_BPF_JEQ_K, 0, 1, nr), _insn(_BPF_RET_K, 0, 0, eperm)]
    prog += [_insn(_BPF_JEQ_K, 0, 1, table["clone3"]), _insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # clone(flags, ...): refuse any CLONE_NEW* flag.
    prog += [
        _insn(_BPF_JEQ_K, 0, 4, table["clone"]),
        _insn(_BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
        _insn(_BPF_JSET_K, 0, 1, _CLONE_NEW_NAMESPACES),
        _insn(_BPF_RET_K, 0, 0, eperm),
        _insn(_BPF_RET_K, 0, 0, _RET_ALLOW),
    ]
    prog += _socket_rules(table["socket"], network)
    if not connect:
        prog += [_insn(_BPF_JEQ_K, 0, 1, table["connect"]), _insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.EACCES)]
    if not truncate:
        prog += [_insn(_BPF_JEQ_K, 0, 1, table["truncate"]), _insn(_BPF_RET_K, 0, 0, _RET_ERRNO | errno.EACCES)]
    prog.append(_insn(_BPF_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def _socket_rules(nr: int, network: bool) -> list[bytes]:
    """socket(family, type, protocol): only AF_UNIX (multiprocessing, local IPC) without network;
    with it, every family but ``DENIED_SOCKETS``. Refused with EACCES."""
    eacces = _RET_ERRNO | errno.EACCES
    if not network:
        checks = [_insn(_BPF_JEQ_K, 1, 0, AF_UNIX), _insn(_BPF_RET_K, 0, 0, eacces)]
    else:  # each check falls through to the next when it does not match; the last allows
        checks = []
        for family, protocol in DENIED_SOCKETS:
            if protocol is None:
                checks += [_insn(_BPF_JEQ_K, 0, 1, family), _insn(_BPF_RET_K, 0, 0, eacces)]
            else:  # load the protocol, test it, and load the family again for the next check
                checks += [
                    _insn(_BPF_JEQ_K, 0, 4, family),
                    _insn(_BPF_LD_W_ABS, 0, 0, _OFF_ARG2),
                    _insn(_BPF_JEQ_K, 0, 1, protocol),
                    _insn(_BPF_RET_K, 0, 0, eacces),
                    _insn(_BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
                ]
    checks.append(_insn(_BPF_RET_K, 0, 0, _RET_ALLOW))
    return [_insn(_BPF_JEQ_K, 0, len(checks) + 1, nr), _insn(_BPF_LD_W_ABS, 0, 0, _OFF_ARG0), *checks]


def apply_seccomp(network: bool, connect: bool = True, truncate: bool = True) -> None:
    program = seccomp_program(network, connect, truncate)
    count = len(program) // 8
    filters = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(count, ctypes.addressof(filters))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")


def confine(plan: Plan) -> list[str]:
    """Apply ``plan`` (built by the host) and return notes on what was applied."""
    notes = []
    apply_rlimits(plan.get("rlimits", {}))
    if plan.get("mounts"):
        notes += private_mounts(**plan["mounts"])
    if plan.get("landlock"):
        notes.append(apply_landlock(plan["readable"], plan["writable"], plan.get("network", False)))
    if plan.get("seccomp"):
        if has_capabilities():
            drop_capabilities()
            notes.append("capabilities dropped")
        truncate = not plan.get("landlock") or landlock_abi() >= 3  # else Landlock lets truncate() through
        apply_seccomp(plan.get("network", False), plan.get("connect", True), truncate)
        notes.append("seccomp denylist")
    return notes
