"""A fork server for the process sandbox: stdlib only, runs in the target's Python.

Started by the kernel as ``python -I forkserver.py CONTROL MODE [LEFTOVER...]`` (CONTROL: the
file descriptor of a ``SOCK_SEQPACKET`` socket to the kernel; MODE: ``none``, ``root`` or
``user``, the namespaces each run gets; LEFTOVER: glob patterns of the kernel's scratch
directories). It imports the bootstrap and the confinement
code once, says ``ready``, and then only forks: one child per request, which becomes a
fresh bootstrap for exactly one run. The template itself never reads a request, never
runs a cell and is never confined, so nothing a run does can reach the next one: each
child starts from the template's untouched memory.

A fork request is a JSON message ``{"network": bool, "cgroups": [...], "session": bool}``
(the ``cgroup.procs`` files of the run's own group, which the child joins first, so all it
starts is in it; ``session``: the child is a sandbox session's, serving many cells) carrying
five descriptors: the run's stdin (the request; a session's: its socket), stdout, stderr,
protocol channel, and a status pipe. The
template answers ``{"pid": N}`` (N in the kernel's pid namespace) and, once that child is
reaped, writes ``{"status": S, "maxrss": B, "cpu": T}`` to its status pipe and closes it.

Each child starts a process session of its own and dies with the template (``PDEATHSIG``); with
namespaces it unshares pid, mount and net (``--network``: not net) — under ``user``
inside a user namespace of its own, the user's ids mapped to themselves; a new net namespace
has its loopback up — and forks the
pid namespace's init, which mounts its ``/proc`` and runs the bootstrap (whose
supervisor ends everything the cell left). Without namespaces the child is the
bootstrap itself, a child subreaper (``JX_SUPERVISE``). The template is a subreaper too:
what escapes a killed child is re-parented to it and killed at once, and everything
still running is killed when the kernel lets go of the control socket. The kernel says
``{"close": true}`` first when it lets go on purpose; a socket that ends without it means the
kernel died (SIGKILL, the OOM killer), and the template, the last of it, then also removes
what the kernel would have removed after its runs: their cgroups and the LEFTOVER folders.

``python -I forkserver.py --probe MODE`` checks that MODE's namespaces work here (the
child mounts a tmpfs at ``/dev/shm`` and exits 0).
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import json
import os
import pickle  # noqa: F401  (loaded once here: a run with --in values unpickles them)
import select
import shutil
import signal
import socket
import struct
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _here)
try:
    import bootstrap
    import confine
finally:
    sys.path.remove(_here)
    sys.modules.pop("bootstrap", None)
    sys.modules.pop("confine", None)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
_SIOCSIFFLAGS, _IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
_FDS = 5  # stdin, stdout, stderr, protocol, status
_CLOSE = b'{"close": true}'  # the kernel lets go on purpose (templates.Template.close)
_OWNER_VAR = "JX_OWNER_PID"  # the kernel's pid (templates.OWNER_VAR)
_DEATH_WAIT = 2.0  # seconds for a kernel whose socket ended to be seen exited
_CHANNEL = 3  # the protocol channel's number in a child


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _die_with_parent(parent: int | None) -> None:
    """SIGKILL this process when its parent dies; exit now if ``parent`` already has (None:
    the parent is outside this process's pid namespace, where ``getppid`` cannot see it)."""
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def enter_namespaces(mode: str, network: bool) -> None:
    """Unshare pid, mount and (unless ``network``) net namespaces; with ``user``, inside a
    user namespace of the process's own, its uid and gid mapped to themselves. Mounts are
    made private, so nothing mounted in the run propagates to the host."""
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWNS | _CLONE_NEWPID | (0 if network else _CLONE_NEWNET)
    if mode == "user":
        flags |= _CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if mode == "user":
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as mapping:
                mapping.write(text)
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    if not network:
        _loopback_up()


def _loopback_up() -> None:
    """Bring up the new network namespace's loopback, its only interface: a host-list run's
    relay to the proxy listens there (nothing outside the namespace is reachable through it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING))


def become_init() -> None:
    """In a new pid namespace: fork its init and stay behind as the host-side parent that
    exits as the init does (as ``unshare --fork --kill-child``). Returns in the init, which
    has its own ``/proc``."""
    init = os.fork()
    if init == 0:
        _die_with_parent(None)
        _check(_libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None), "mount /proc")
        return
    os.closerange(0, _CHANNEL + 1)  # the run's descriptors are the init's alone
    _, status = os.waitpid(init, 0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def run_child(template: int, mode: str, network: bool, cgroups: list[str], fds: list[int], session: bool) -> None:
    """In a child just forked: in its cgroup, the run's descriptors in place, everything else
    of the template's closed, namespaces entered, then the bootstrap. Never returns."""
    try:
        for procs in cgroups:
            with open(procs, "w") as group:
                group.write("0")
        os.setsid()
        _die_with_parent(template)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10 + _FDS) for fd in fds[:4]]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(_CHANNEL + 1, os.sysconf("SC_OPEN_MAX"))
        if mode != "none":
            enter_namespaces(mode, network)
            become_init()
        bootstrap.serve(_CHANNEL, confine, control=0 if session else None)
    except BaseException as error:  # whatever it is, the run's stderr says so
        os.write(2, f"the sandbox process could not start: {error!r}\n".encode())
    os._exit(127)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def serve(control: socket.socket, mode: str, leftovers: list[str]) -> None:
    """Fork a child per request until the kernel closes ``control``; report each child's end.
    Then kill everything still running below the template, and if the kernel died, remove what
    it left (the runs' cgroups, ``leftovers``)."""
    template = os.getpid()
    kernel = _pidfd(os.environ.get(_OWNER_VAR, ""))  # readable once the kernel has exited
    joined: set[str] = set()  # the cgroup.procs files of the runs' groups
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    status_pipes: dict[int, int] = {}
    data = b""
    _send(control, {"ready": template})
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 2)  # from now on errors go back over the control socket
    os.close(null)
    while True:
        readable, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in readable:
            _drain(wake_read)
        _reap(status_pipes)
        _kill_orphans(status_pipes)
        if control.fileno() not in readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, 4096, _FDS)
        except OSError:
            data, fds = b"", []
        if not data or data == _CLOSE:
            break
        try:
            joined.update(_fork(template, mode, data, fds, status_pipes, control))
        except OSError as error:
            _send(control, {"error": str(error)})
        finally:
            for fd in fds:
                if fd not in status_pipes.values():
                    os.close(fd)
    bootstrap.kill_descendants()
    if data != _CLOSE and kernel is not None and select.select([kernel], [], [], _DEATH_WAIT)[0]:
        _remove_leftovers(joined, leftovers)


def _pidfd(pid: str) -> int | None:
    try:
        return os.pidfd_open(int(pid))
    except (ValueError, OSError):  # no kernel named, or gone already: nothing is removed for it
        return None


def _remove_leftovers(joined: set[str], leftovers: list[str]) -> None:
    """What a dead kernel would have removed after its runs: their (now empty) cgroups, its folders
    and the groups it made itself (a session's fork's: a folder with ``cgroup.procs``)."""
    groups = [os.path.dirname(procs) for procs in joined]
    for found in (found for pattern in leftovers for found in glob.glob(pattern)):
        if os.path.exists(os.path.join(found, "cgroup.procs")):
            groups.append(found)
        else:
            shutil.rmtree(found, ignore_errors=True)
    for group in groups:
        try:
            os.rmdir(group)
        except OSError:
            pass  # removed already, or another template's run is still in it


def _fork(
    template: int, mode: str, data: bytes, fds: list[int], status_pipes: dict[int, int], control: socket.socket
) -> list[str]:
    if len(fds) != _FDS:
        raise OSError(f"a fork request needs {_FDS} descriptors, got {len(fds)}")
    request = json.loads(data)
    cgroups = list(request.get("cgroups", []))
    child = os.fork()
    if child == 0:
        run_child(template, mode, bool(request.get("network")), cgroups, fds, bool(request.get("session")))
    status_pipes[child] = fds[4]
    _send(control, {"pid": child})
    return cgroups


def _reap(status_pipes: dict[int, int]) -> None:
    """Reap every child that ended; tell the kernel how each of its runs' processes ended."""
    while True:
        try:
            pid, status, rusage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_pipes.pop(pid, None)
        if fd is None:
            continue  # an orphan of a run, re-parented here
        report = {"status": status, "maxrss": rusage.ru_maxrss * 1024, "cpu": rusage.ru_utime + rusage.ru_stime}
        try:
            os.write(fd, json.dumps(report).encode())
        except OSError:
            pass  # the kernel no longer listens
        os.close(fd)


def _kill_orphans(runs: dict[int, int]) -> None:
    """Kill what a run left that was re-parented here (its supervisor killed before it could):
    the template's only living children are the runs it forked."""
    here = os.getpid()
    try:
        with open(f"/proc/{here}/task/{here}/children") as listed:
            children = [int(pid) for pid in listed.read().split()]
    except OSError:
        return
    for pid in children:
        if pid not in runs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def probe(mode: str) -> int:
    """0 if a child can enter ``mode``'s namespaces and mount its own ``/dev/shm`` here."""
    child = os.fork()
    if child == 0:
        try:
            enter_namespaces(mode, network=False)
            become_init()
            _check(_libc.mount(b"jx", b"/dev/shm", b"tmpfs", 0, None), "mount /dev/shm")
        except OSError as error:
            os.write(2, f"{error}\n".encode())
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    if sys.argv[1] == "--probe":
        sys.exit(probe(sys.argv[2]))
    control = socket.socket(fileno=int(sys.argv[1]))
    serve(control, sys.argv[2], sys.argv[3:])
    os._exit(0)


if __name__ == "__main__":
    main()
