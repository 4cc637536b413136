"""Run a cell in a separate local process: ``local`` (rlimits) and ``seccomp`` (confined).

Both use the same pre-started workers, the same limits and the same clean-up; ``seccomp``
adds the confinement the bootstrap applies to itself (Landlock, dropped capabilities,
a seccomp denylist) and new pid/mount/net namespaces where the host allows them: as
root, or for an ordinary user inside a user namespace of the run's own. In its mount
namespace a run gets its own ``/dev/shm`` (``--shm``) and ``/tmp`` and ``/run`` emptied
but for its own paths; ``local`` shares the host's, so it takes no ``--shm``. Without a pid
namespace the worker's supervisor (a child subreaper) kills what the cell leaves running.

How each limit is kept depends on the host and on who runs the kernel (a cgroup per run,
or rlimits): ``guarantees`` works that out once, and a limit that cannot be enforced here
refuses the run instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from jupyter_exec.backends import names
from jupyter_exec.backends.base import Availability, ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.backends.runs import KillableRun, RunRegistry
from jupyter_exec.backends.sessions import HoldsSessions, SessionTable, later_request
from jupyter_exec.config import ExecConfig, scratch_prefix
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.envs.venv import VenvBuilder
from jupyter_exec.errors import BackendUnavailableError, JupyterExecError
from jupyter_exec.monitor import Usage, proc_usage
from jupyter_exec.proxy import RELAY_PORT, Gate, gate_for
from jupyter_exec.runner import confine as confinement
from jupyter_exec.runner.plans import Mounts, Plan, Rlimits
from jupyter_exec.runner.protocol import ProtocolReader, build_request
from jupyter_exec.spec import Limits, RunSpec

from .cgroups import cgroup_mode, reap_cgroups
from .guarantees import guarantees
from .sessions import FORKS, ProcessSession, SessionCell, fork_cgroup
from .templates import Exit
from .workers import Worker, WorkerKey, WorkerPool, reap_workers

__all__ = ["LocalBackend", "SeccompBackend"]

_SYSTEM_READABLE = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys")
_MASKED = ("/tmp", "/run", "/var/run")  # where the host keeps sockets: hidden when there is a mount namespace
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_ALL_LIMITS = frozenset(f.name for f in dataclasses.fields(Limits))


@functools.cache
def _python_build() -> str:
    return f"{os.path.realpath(sys.executable)} {sys.version}"


@functools.cache
def _host_mount_ns() -> str:
    """The kernel's own mount namespace: a run's ``/dev/shm`` is mounted only outside it."""
    return os.readlink("/proc/self/ns/mnt")


@functools.cache
def python_readable_paths() -> tuple[str, ...]:
    """The interpreter's installation and the environment's packages (read-only in a run)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p)
    return tuple(sorted(p for p in paths if p))


class LocalBackend(HoldsSessions, ExecutorBackend):
    """A subprocess in its own process session, with rlimits, a cgroup where possible, and a
    wall-clock timeout that kills everything the run started."""

    name: ClassVar[str] = names.LOCAL
    isolation: ClassVar[str] = "subprocess"
    needs_scratch: ClassVar[bool] = True
    samples: ClassVar[bool] = True
    confined: ClassVar[bool] = False

    def __init__(self, config: ExecConfig) -> None:
        super().__init__(config)
        self.pool = WorkerPool(config.pool_size, _leftovers(config))
        self.runs: RunRegistry[_ProcessRun | SessionCell] = RunRegistry()
        self.sessions: SessionTable[ProcessSession] = SessionTable(config.session_idle_seconds())

    @classmethod
    def reap(cls) -> int:
        """Workers, and their cgroups, whose kernel is gone."""
        return reap_workers() + reap_cgroups()

    @classmethod
    def availability(cls) -> Availability:
        if not sys.platform.startswith("linux"):
            return Availability(False, f"needs Linux, this is {sys.platform}", "use --backend docker")
        promised = guarantees(cls.confined)
        return Availability(True, notes=(*promised.notes(), *_session_notes(promised.cgroup.kind)))

    # A class attribute elsewhere; here it depends on the host, so it is read from the instance
    # (as the manager reads it) and worked out only then. Never assigned: mypy sees a ClassVar
    # as writable and so refuses any read-only property over it.
    @property
    def enforced_limits(self) -> frozenset[str]:  # type: ignore[override]
        """Every limit but GPUs (a process has no GPU placement) and those this host cannot keep
        for this backend (``guarantees``): no default is applied for those, an explicit one is refused."""
        return _ALL_LIMITS - {"gpus"} - guarantees(self.confined).unenforced()

    def refusal(self, limits: Limits, unenforced: tuple[str, ...]) -> tuple[str, str]:
        """GPUs first (no process has them), else the first limit this host cannot keep, and why."""
        if "gpus" in unenforced:
            return (
                f"--gpus {limits.gpus}: a local process has no GPU placement",
                "use --backend docker (with the NVIDIA runtime) or %%rayrun --num-gpus",
            )
        promised = guarantees(self.confined)
        return promised.refusal(unenforced[0]), promised.limit(unenforced[0]).fix

    def _worker_key(self, limits: Limits, python: str) -> WorkerKey:
        return WorkerKey(python, namespaces=False, network=True)

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """The kernel's Python build (a runtime env's own Python is in the env's hash)."""
        return {**super().identity(spec), "python": _python_build()}

    def env_builder(self, env: EnvSpec | None = None) -> VenvBuilder:
        return VenvBuilder(sys.executable, self.config.ca_bundle or None)

    def initialize(self) -> None:
        self.pool.start(self._worker_key(Limits(), sys.executable))

    def confine_plan(self, submission: Submission) -> Plan:
        return {"rlimits": self._rlimits(submission.spec.limits)}

    def _rlimits(self, limits: Limits) -> Rlimits:
        """The rlimits of a run (admitted: every limit in it is one this host keeps)."""
        promised = guarantees(self.confined)
        rlimits: Rlimits = {"cpu": limits.cpu_time and max(1, round(limits.cpu_time)), "fsize": limits.fsize}
        if not promised.cgroup.kind:
            rlimits["as"] = limits.memory
            # In a user namespace of the run's own, RLIMIT_NPROC counts only its processes;
            # outside one it counts all of the user's, so it is set above those running now.
            in_user_namespace = self.confined and promised.namespaces.user and not promised.root
            rlimits["nproc" if in_user_namespace else "nproc_more"] = limits.pids
        return rlimits

    def submit(self, submission: Submission) -> TaskHandle:
        if submission.spec.session is not None:
            return self._submit_to_session(submission)
        limits = submission.spec.limits
        request = self._request(submission)
        gate = gate_for(self.name, limits.hosts, _gate_path(submission)) if limits.hosts else None
        asked = time.time()
        try:
            worker = self.pool.take(
                self._worker_key(limits, self._python(submission)), functools.partial(_set_limits, limits=limits)
            )
        except BaseException:
            if gate is not None:
                gate.close()
            raise
        run = _ProcessRun(submission, self, worker, gate)
        self.runs.add(run)
        try:
            run.start(request, "pool" if worker.made < asked else "made")
        except BaseException:
            run.release()
            worker.close()
            if gate is not None:
                gate.close()
            raise
        return run.handle

    def _python(self, submission: Submission) -> str:
        environment = submission.environment
        return environment.python if environment and environment.python else sys.executable

    def _request(self, submission: Submission) -> bytes:
        """The runner's request for ``submission``, confined to its scratch directory (with a
        host list, its relay to the gate ``submit`` opens there)."""
        plan = self.confine_plan(submission)
        environment = submission.environment
        return build_request(
            submission.code,
            inputs=submission.inputs,
            outputs=submission.spec.outputs,
            trust=submission.spec.trust,
            cwd=str(submission.scratch),
            confine=plan,
            env={"HOME": str(submission.scratch), "TMPDIR": str(submission.scratch), **submission.spec.env},
            sys_path=environment.sys_path if environment else (),
            working_dir=str(environment.working_dir) if environment and environment.working_dir else None,
        )

    def _submit_to_session(self, submission: Submission) -> TaskHandle:
        """A cell of session ``spec.session``: in it when it lives (after the cell it runs now),
        else in one started now, confined by this first cell's request for the whole session."""
        session = self.sessions.enter(submission, lambda: self._start_session(submission))
        submission = dataclasses.replace(submission, scratch=session.scratch)
        cell = SessionCell(submission, self, session)

        def start() -> None:
            first = session.cells == 1 and session.forked_from is None  # it confines the session
            cell.start(self._request(submission) if first else later_request(submission))

        return self.start_cell(cell, start)

    def _start_session(self, submission: Submission) -> ProcessSession:
        spec = submission.spec
        assert spec.session is not None
        prefix = f"{scratch_prefix(os.getpid())}session-{spec.session}-"  # removed with the kernel's scratch
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=self.config.scratch_dir))
        gate = None
        try:
            gate = gate_for(self.name, spec.limits.hosts, scratch / _GATE)  # the session's, for its life
            worker = self.pool.session_worker(self._worker_key(spec.limits, self._python(submission)))
            try:
                _set_limits(worker, spec.limits)
                session = ProcessSession(spec.session, self.name, submission, worker, scratch)
            except BaseException:
                worker.close()
                raise
        except BaseException:
            if gate is not None:
                gate.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        session.gate = gate
        return session

    def fork_session(self, parent: str, name: str, say: Callable[[str], None]) -> None:
        """Session ``name`` as a fork of ``parent``'s process (after the cell it runs now), walled
        into its own copy of the scratch directory as the first cell's confinement would be there."""
        session = self.sessions.get(parent)
        if session is None:
            raise JupyterExecError(f"no session {parent!r} to fork in this kernel; %jx sessions lists them")
        if session.gate is not None:
            raise JupyterExecError(
                f"session {parent} reaches a host list (--network {session.spec.limits.hosts}), and a fork cannot "
                "take its network relay yet; fork a session without a host list, or run its cells again in a new one"
            )
        session.take_turn(None, say)
        try:
            scratch = session.scratch / FORKS / name
            plan = self.confine_plan(dataclasses.replace(session.first, scratch=scratch))
            landlock = (
                {"readable": plan["readable"], "writable": plan["writable"], "network": plan.get("network", False)}
                if plan.get("landlock")
                else None
            )
            self.sessions.adopt(name, lambda: session.fork(name, landlock))
        finally:
            session.give_turn()

    def cancel(self, handle: TaskHandle) -> bool:
        return self.runs.cancel(handle.run_id)

    def shutdown(self) -> None:
        self.runs.shutdown()
        self.sessions.close()
        self.pool.close()

    def get_available_resources(self) -> dict[str, Any]:
        return {
            "cpus": os.cpu_count(),
            "memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "idle_workers": self.pool.idle_count(),
        }

    def sample(self, handle: TaskHandle) -> Usage | None:
        run = self.runs.get(handle.run_id)
        if isinstance(run, SessionCell):
            return run.session.usage()
        return None if run is None else run.usage()

    def forget(self, run_id: int) -> None:
        self.runs.forget(run_id)


class SeccompBackend(LocalBackend):
    """``local`` plus Landlock, dropped capabilities, a seccomp denylist and namespaces."""

    name: ClassVar[str] = names.SECCOMP
    isolation: ClassVar[str] = "seccomp"
    confined: ClassVar[bool] = True

    @classmethod
    def availability(cls) -> Availability:
        base = LocalBackend.availability()
        if not base.ok:
            return base
        if not confinement.has_seccomp_filter():
            return Availability(False, f"no seccomp filter for {confinement.machine()}", "use --backend docker")
        abi = confinement.landlock_abi()
        if abi < 1:
            return _without_landlock(-abi)
        promised = guarantees(cls.confined)
        notes = [f"landlock abi {abi}", *promised.notes()]
        if abi < 6 and not promised.namespaces.available:
            notes.append("signals: Landlock before ABI 6 cannot stop a run signalling your other processes")
        notes.append(
            "sessions: a fork is walled from its parent by a Landlock layer of its own (files, signals)"
            if abi >= 6
            else "sessions: a fork can signal its parent session (Landlock before ABI 6 scopes no signals)"
        )
        notes += _session_notes(promised.cgroup.kind)
        if abi < 3:
            notes.append("truncate(): Landlock before ABI 3 does not govern it, so the seccomp filter refuses it")
        return Availability(True, notes=tuple(notes))

    def _worker_key(self, limits: Limits, python: str) -> WorkerKey:
        return WorkerKey(python, namespaces=guarantees(True).namespaces.available, network=limits.open_network)

    def confine_plan(self, submission: Submission) -> Plan:
        spec = submission.spec
        for mount in spec.mounts:
            if mount.target != str(mount.source):
                raise BackendUnavailableError(
                    self.name,
                    f"--mount {mount.source}:{mount.target}: this backend shows a mount at its host path",
                    f"write --mount {mount.source} (or use --backend docker to place it elsewhere)",
                )
        readable = [*_SYSTEM_READABLE, *python_readable_paths(), *(str(m.source) for m in spec.mounts if m.read_only)]
        if submission.environment is not None:
            readable.append(str(submission.environment.path))
        writable = [str(submission.scratch), *_DEVICES, *(str(m.source) for m in spec.mounts if not m.read_only)]
        plan: Plan = {
            **super().confine_plan(submission),
            "landlock": True,
            "seccomp": True,
            "network": spec.limits.open_network,
        }
        if spec.limits.hosts is not None:
            plan["relay"] = {"socket": str(_gate_path(submission)), "port": RELAY_PORT}
        if guarantees(True).namespaces.available:
            plan["mounts"] = _private_mounts(spec.limits, [*readable, *writable])
            readable += plan["mounts"]["mask"]  # only the run's own paths are left there
            writable.append(confinement.SHM_PATH)
        else:
            # No mount namespace, so the host's socket files cannot be hidden from the run, and
            # Landlock does not cover connect(): refuse it, as socket() is refused, unless --network.
            plan["connect"] = spec.limits.open_network
        return {**plan, "readable": readable, "writable": writable}


def _session_notes(cgroup: str | None) -> list[str]:
    """What doctor says of sessions here: whether their limits hold the session whole."""
    if cgroup:
        return []
    return ["sessions: no cgroup here, so --mem and --pids hold each process of a session, not the session whole"]


def _without_landlock(error: int) -> Availability:
    """Why Landlock, which confines the run's files, cannot be used here (the kernel's errno)."""
    if error == errno.EPERM:
        return Availability(
            False,
            "a seccomp filter on this process refuses Landlock, needed to confine files (the default profile "
            "of a container runtime older than Docker 20.10.18 or containerd 1.6)",
            "start the server's container with a profile that allows landlock_create_ruleset, landlock_add_rule "
            "and landlock_restrict_self (a newer runtime's default does), or use --backend docker",
        )
    if error == errno.EOPNOTSUPP:
        return Availability(
            False,
            "Landlock is in this kernel but not enabled at boot (needed to confine files)",
            "boot with lsm=landlock,... or use --backend docker",
        )
    filtered = "Seccomp:\t2" in Path("/proc/self/status").read_text()  # a profile may answer ENOSYS too
    return Availability(
        False,
        f"this kernel has no Landlock{', or a seccomp filter on this process refuses it' if filtered else ''}, "
        f"needed to confine files ({os.strerror(error)}; Landlock came in Linux 5.13)",
        "use --backend docker, or a kernel built with Landlock"
        + (" and a container profile that allows its calls" if filtered else ""),
    )


def _private_mounts(limits: Limits, seen: list[str]) -> Mounts:
    """The run's mounts in its own mount namespace: ``/dev/shm`` of ``--shm``; ``/tmp`` and
    ``/run`` emptied, but for the paths the run must ``seen`` there (its scratch directory
    under the default ``/tmp``, a ``--mount``), which stay at their place."""
    mask = {}
    for top in _MASKED:
        if os.path.isdir(top) and not os.path.islink(top) and top not in seen:
            mask[top] = [path for path in seen if path.startswith(top + "/")]
    return {"host_mount_ns": _host_mount_ns(), "shm_size": limits.shm, "mask": mask}


def _leftovers(config: ExecConfig) -> tuple[str, ...]:
    """What this kernel's templates remove if it dies (runner/forkserver.py): its scratch
    directories, and the groups of its sessions' forks (which the kernel makes, not a template)."""
    kernel = os.getpid()
    forks = (str(parent / fork_cgroup(kernel, "*")) for parent in set(cgroup_mode().parents.values()))
    return (os.path.join(config.scratch_dir, f"{scratch_prefix(kernel)}*"), *sorted(forks))


_GATE = "proxy.sock"  # a host-list run's (or session's) gate, in its scratch directory


def _gate_path(submission: Submission) -> Path:
    assert submission.scratch is not None  # needs_scratch
    return submission.scratch / _GATE


def _set_limits(worker: Worker, limits: Limits) -> None:
    """The run's memory, pids and CPU limits on the worker's cgroup (if it has one)."""
    if worker.cgroup is not None:
        worker.cgroup.set_limits(memory=limits.memory, pids=limits.pids, cpus=limits.cpus)


class _ProcessRun(KillableRun):
    """One run in one worker: feeds the request, pumps the pipes, enforces the clock."""

    def __init__(self, submission: Submission, backend: LocalBackend, worker: Worker, gate: Gate | None) -> None:
        self.submission, self.backend, self.worker, self.gate = submission, backend, worker, gate
        self.handle = TaskHandle(submission, backend)
        self.reader = ProtocolReader(submission.sink, submission.spec.trust)
        self.cgroup = worker.cgroup

    def start(self, request: bytes, pool_note: str | None = None) -> None:
        """Hand the worker the request once it is ready (``pool_note``: how it was had, for the timeline)."""
        limits = self.submission.spec.limits
        self.reader.feed(self.worker.wait_ready())
        _set_limits(self.worker, limits)  # nothing to write if the pool primed it for these limits
        self.handle.mark("sandbox_ready", note=pool_note)
        self.worker.child.write_request(request)
        self.handle.started = time.time()
        self.start_pump()

    def kill(self) -> None:
        self.worker.kill()

    def release(self) -> None:
        self.backend.forget(self.submission.run_id)

    def after(self) -> None:
        """Off the run's path, once it is over: the worker reaped, its cgroup removed, its pipes closed."""
        self.worker.close(ended=True)

    def usage(self) -> Usage:
        """Memory and CPU seconds of the run's processes. Memory is the larger of their resident
        size and the cgroup's count (which leaves out what the worker allocated before joining it)."""
        pids = self.cgroup.procs() if self.cgroup else self.worker.tree()
        usage = proc_usage(pids)
        if self.cgroup is not None:
            usage["memory"] = max(usage.get("memory") or 0, self.cgroup.memory_current() or 0)
        return usage

    def stream_until_exit(self) -> Outcome:
        """Stream the run's pipes until they close, then say how it ended: from the supervisor's
        report when the cell sent its envelope, else once the template has reaped the worker
        (its CPU time then tells a ``--cpu-time`` kill from another)."""
        child = self.worker.child
        self.stream({child.stdout: "stdout", child.stderr: "stderr", self.worker.protocol_fd: "protocol"})
        if self.reader.envelope is not None and self.reader.exit_status is not None:
            return self._outcome(Exit(self.reader.exit_status))
        ended = child.wait()
        assert ended is not None  # no timeout: until it is reaped
        return self._outcome(ended)

    def _outcome(self, ended: Exit) -> Outcome:
        envelope = self.reader.envelope
        usage = envelope.usage if envelope else {}
        peak = self.cgroup.peak_memory() if self.cgroup else None
        outcome = classify(
            run_id=self.submission.run_id,
            limits=self.submission.spec.limits,
            reader=self.reader,
            wait_status=ended.status,
            cancelled=self.cancel_requested,
            timed_out=self.timed_out,
            oom_killed=bool(self.cgroup and self.cgroup.oom_killed()),
            peak_memory=peak or usage.get("max_rss") or ended.maxrss,
            cpu_seconds=usage.get("cpu_seconds", ended.cpu_seconds),
        )
        if self.gate is not None:
            traffic = self.gate.close()
            outcome.details["network"], outcome.connections = traffic.summary(), traffic.rows()
        return outcome
