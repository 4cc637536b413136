"""The kernel's side of the fork server (``runner/forkserver.py``): start a template, and
ask it for a fresh bootstrap per run.

Starting Python costs tens of milliseconds; forking a template that already imported the
bootstrap costs about one. A ``Template`` is one such process, started with a minimal
environment (never the kernel's: it may hold tokens) that carries ``JX_OWNER_PID`` and the
pid namespace that pid is in, so the templates and runs of a dead kernel can be found and
killed. Each ``fork`` hands it five new pipes and gets back a ``Forked`` child: its pid, the
kernel's ends of the pipes, and ``wait()`` for how it ended (the template reaps it: the
child is not the kernel's).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
from dataclasses import dataclass

from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.bootstrap import SUPERVISE_VAR
from jupyter_exec.runner.protocol import FORKSERVER_PATH

__all__ = ["OWNER_NS_VAR", "OWNER_VAR", "Exit", "Forked", "Template", "pid_namespace", "worker_env"]

OWNER_VAR = "JX_OWNER_PID"
# The pid namespace in which OWNER_VAR's pid is the kernel's: a reaper judges only processes of
# kernels in its own (from a host, the pids a container's processes name are other processes).
OWNER_NS_VAR = "JX_OWNER_PIDNS"
_BASE_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "TZ")
_BUS_VARS = ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")
_WITHOUT_BUS = ("env", *(f"--unset={name}" for name in _BUS_VARS))
_KILLED = 9  # the wait status of a process killed by SIGKILL
_CLOSE = b'{"close": true}'  # see runner/forkserver.py


def pid_namespace() -> str:
    """This process's pid namespace, as the number of its ``/proc/self/ns/pid`` inode."""
    return str(os.stat("/proc/self/ns/pid").st_ino)


def worker_env(supervise: bool) -> dict[str, str]:
    """The environment runs start from: a few of the kernel's locale and path variables."""
    env = {k: os.environ[k] for k in _BASE_ENV_NAMES if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        {
            OWNER_VAR: str(os.getpid()),
            OWNER_NS_VAR: pid_namespace(),
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    if supervise:
        env[SUPERVISE_VAR] = "1"
    return env


@dataclass(frozen=True)
class Exit:
    """How a forked child ended: its wait status, peak resident memory (bytes), CPU seconds
    of it and everything it waited for."""

    status: int
    maxrss: int = 0
    cpu_seconds: float = 0.0


class Forked:
    """One child of a template: its pid and the kernel's ends of its pipes."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int, protocol: int, status: int) -> None:
        self.pid, self.stdin, self.stdout, self.stderr, self.protocol = pid, stdin, stdout, stderr, protocol
        self._status = status
        self._exit: Exit | None = None

    def write_request(self, request: bytes) -> None:
        """Send the request and close stdin (the bootstrap reads it to the end)."""
        view = memoryview(request)
        try:
            while view:
                view = view[os.write(self.stdin, view) :]
        finally:
            self._close("stdin")

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block until the child has been reaped (None: not within ``timeout`` seconds). A
        template that died without saying counts as a kill (its children die with it)."""
        if self._exit is None:
            report = b""
            while True:
                if timeout is not None and not select.select([self._status], [], [], timeout)[0]:
                    return None
                if not (chunk := os.read(self._status, 4096)):
                    break
                report += chunk
            fields = json.loads(report) if report else {"status": _KILLED}
            self._exit = Exit(fields["status"], fields.get("maxrss", 0), fields.get("cpu", 0.0))
        return self._exit

    def stderr_now(self) -> str:
        """What the child wrote to stderr so far (for a child that did not start)."""
        text = b""
        while select.select([self.stderr], [], [], 0.5)[0] and (chunk := os.read(self.stderr, 65536)):
            text += chunk
        return text.decode(errors="replace").strip()[-2000:]

    def _close(self, name: str) -> None:
        fd = getattr(self, name)
        if fd >= 0:
            os.close(fd)
            setattr(self, name, -1)

    def close(self) -> None:
        """Close the kernel's ends of the pipes (the child's exit is no longer awaited)."""
        for name in ("stdin", "stdout", "stderr", "protocol"):
            self._close(name)
        if self._status >= 0:
            os.close(self._status)
            self._status = -1


def _socket_pair() -> tuple[int, int]:
    """A Unix stream socket pair as two close-on-exec descriptors (the child's end, ours)."""
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return theirs.detach(), ours.detach()


class Template:
    """One fork server process for runs on ``python`` with namespaces ``mode`` (none, root,
    user). ``scope``: start it in a systemd user scope of that name (where runs get their
    cgroup that way; such a template serves one run). ``leftovers``: glob patterns of the kernel's
    folders the template removes if the kernel dies (its runs' scratch directories)."""

    def __init__(self, python: str, mode: str, scope: list[str] | None = None, leftovers: tuple[str, ...] = ()) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [python, "-I", str(FORKSERVER_PATH), str(theirs.fileno()), mode, *leftovers]
        env = worker_env(supervise=mode == "none")
        if scope:
            # The user manager makes the scope; its address is for systemd-run, not the run.
            command = [*scope, *_WITHOUT_BUS, *command]
            env.update({k: os.environ[k] for k in _BUS_VARS if k in os.environ})
        self.mode = mode
        self._lock = threading.Lock()
        self._control = ours
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a notebook's interrupt goes to the kernel's group, not here
                env=env,
                cwd="/",
            )
        finally:
            theirs.close()
        try:
            self._answer(timeout=30)
        except BaseException:
            self.close()
            raise
        assert self.process.stderr is not None
        self.process.stderr.close()  # the template's own stderr is /dev/null from now on

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None and self._control.fileno() >= 0

    def _answer(self, timeout: float | None = None) -> dict[str, object]:
        if not select.select([self._control], [], [], timeout)[0]:
            raise NodeFailedError(f"the sandbox's fork server did not answer in {timeout} s")
        reply = self._control.recv(4096)
        if not reply:
            assert self.process.stderr is not None
            self.process.wait(5)
            stderr = self.process.stderr.read().decode(errors="replace").strip()[-2000:]
            raise NodeFailedError(f"the sandbox's fork server exited: {stderr or f'exit {self.process.returncode}'}")
        answer: dict[str, object] = json.loads(reply)
        return answer

    def fork(self, network: bool, joins: list[str] | tuple[str, ...] = (), session: bool = False) -> Forked:
        """A new child, the bootstrap of one run (``network``: without a net namespace; ``joins``:
        the ``cgroup.procs`` files it writes itself into before it starts anything; ``session``:
        of a sandbox session, whose stdin is a socket for its cells' requests)."""
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(5)]  # stdin, stdout, stderr, protocol, status
        if session:
            os.close(pipes[0][0])
            os.close(pipes[0][1])
            pipes[0] = _socket_pair()
        theirs = [pipes[0][0], *(write for _, write in pipes[1:])]
        ours = [pipes[0][1], *(read for read, _ in pipes[1:])]
        try:
            with self._lock:
                request = json.dumps({"network": network, "cgroups": list(joins), "session": session}).encode()
                socket.send_fds(self._control, [request], theirs)
                answer = self._answer(timeout=30)
        except (OSError, NodeFailedError) as error:
            for fd in ours:
                os.close(fd)
            raise NodeFailedError(f"the sandbox's fork server failed: {error}") from error
        finally:
            for fd in theirs:
                os.close(fd)
        if "pid" not in answer:
            for fd in ours:
                os.close(fd)
            raise NodeFailedError(f"the sandbox's fork server could not fork: {answer.get('error')}")
        return Forked(int(answer["pid"]), *ours)  # type: ignore[call-overload]

    def close(self) -> None:
        """Let go of the template: it kills what it still runs and exits (told first that this is on
        purpose: only a kernel's death has it remove the kernel's leftovers)."""
        try:
            self._control.send(_CLOSE)
        except OSError:
            pass  # it has gone already
        self._control.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.process.stderr.close()
