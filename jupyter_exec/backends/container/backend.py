"""``container`` (also ``docker``): each cell in a fresh, locked-down container that is removed afterwards.

The engine is any that speaks the Docker API (``discovery`` picks it: rootful or rootless
Docker, Podman); the container's lock-down and limits are ``hostconfig``'s, its runtime
``--runtime`` / ``DockerConfig.runtime`` (``runsc``: gVisor), or the one the
administrator's policy forces. ``--timeout`` is enforced from the host by killing the
container; ``--mount`` paths appear at their target, read-only unless ``:rw``.

The cell talks to the kernel through the same bootstrap and protocol as the process
backends, over FIFOs in a read-only bind mount; stdout and stderr come over FIFOs of
their own (see ``slot``). Containers come from a warm pool, each used once, and each
dies with its kernel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from jupyter_exec.backends import names
from jupyter_exec.backends.base import Availability, ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.backends.runs import KillableRun, RunRegistry
from jupyter_exec.backends.sessions import HoldsSessions, SessionTable, later_request
from jupyter_exec.config import ExecConfig, application_config
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.errors import BackendUnavailableError, PolicyError, TaskCancelledError
from jupyter_exec.extras import install_hint
from jupyter_exec.hosts import HostList
from jupyter_exec.monitor import Usage
from jupyter_exec.policy import Policy
from jupyter_exec.proxy import RELAY_PORT, Gate, gate_for
from jupyter_exec.runner.plans import Plan
from jupyter_exec.runner.protocol import ProtocolReader, build_request
from jupyter_exec.spec import Limits, RunSpec

from . import discovery
from .config import ContainerOptions, DockerConfig
from .engine import Engine, RetryPolicy, oom_event
from .envbuilder import ImageEnvBuilder
from .hostconfig import ContainerPlan, plan
from .images import build_command
from .pool import LABEL, ContainerPool, PoolKey, boot_id, reap_containers
from .sessions import ContainerSession, ContainerSessionCell, fork_refusal, session_plan
from .slot import Slot, gone, stopped
from .stats import Sampler

__all__ = ["ContainerBackend"]

_SAMPLE_AFTER = 0.3  # seconds: shorter runs are measured by the bootstrap alone
_AVAILABILITY_TTL = 10.0
_availability_cache: tuple[float, Availability] | None = None
_ALL_LIMITS = frozenset(f.name for f in dataclasses.fields(Limits))


def _settings() -> DockerConfig:
    return DockerConfig(config=application_config())


class ContainerBackend(HoldsSessions, ExecutorBackend):
    """Runs each cell in its own container from a warm pool; see the module docstring."""

    name: ClassVar[str] = names.CONTAINER
    isolation: ClassVar[str] = "container"
    samples: ClassVar[bool] = True
    options_class = ContainerOptions

    def __init__(self, config: ExecConfig) -> None:
        if importlib.util.find_spec("docker") is None:
            raise BackendUnavailableError(self.name, "the Docker SDK is not installed", install_hint("docker"))
        super().__init__(config)
        self.settings = DockerConfig(parent=config)
        if self.settings.user.split(":")[0] in ("0", "root"):
            raise BackendUnavailableError(self.name, "DockerConfig.user must not be root", "set a uid like 65534:65534")
        self.retry_policy = RetryPolicy(self.settings.retries, self.settings.retry_wait)
        self.kernel_id = f"pid-{os.getpid()}"
        self.pool = ContainerPool(config.pool_size, self._make_slot, most=self.settings.pool_max)
        self._plans: dict[PoolKey, ContainerPlan] = {}
        self.runs: RunRegistry[_ContainerRun | ContainerSessionCell] = RunRegistry()
        self.sessions: SessionTable[ContainerSession] = SessionTable(config.session_idle_seconds())
        #: More labels for every container this backend makes (the broker adds the user's name).
        self.labels: dict[str, str] = {}

    @functools.cached_property
    def engine(self) -> Engine:
        """The engine this kernel's containers run on (chosen once)."""
        settings = self.settings
        return discovery.choose(settings.url, settings.docker_group, self.retry_policy, settings.podman_idle)

    # Depends on the engine, so read from the instance (as the manager reads it); see the
    # process backend for why it is a property over a ClassVar.
    @property
    def enforced_limits(self) -> frozenset[str]:  # type: ignore[override]
        """Every limit, but ``cpus`` where the engine has no cgroup for it and ``gpus`` where it has
        no NVIDIA runtime (an explicit one is refused)."""
        facts = self.engine.facts
        return _ALL_LIMITS - {
            *(() if "cpus" in facts.cgroup_limits else ("cpus",)),
            *(() if "nvidia" in facts.runtimes else ("gpus",)),
        }

    def refusal(self, limits: Limits, unenforced: tuple[str, ...]) -> tuple[str, str]:
        if "gpus" in unenforced:
            return (
                f"--gpus {limits.gpus}: the container engine has no NVIDIA runtime, so it cannot give "
                "a container GPUs (the cell was not run)",
                "install the NVIDIA Container Toolkit and restart the engine, drop --gpus, or use %%rayrun --num-gpus",
            )
        facts, engine = self.engine.facts, self.engine
        where = f"{'rootless' if facts.rootless else 'rootful'} {facts.kind} at {engine.url} (cgroup {facts.cgroup})"
        return (
            f"--cpus {limits.cpus:g} (a CPU share needs a cgroup, and none is delegated to it) cannot be enforced "
            f"by the {where}",
            "drop --cpus, or use an engine with cgroups (rootful, or a cgroup v2 host with delegation)",
        )

    @classmethod
    def reap(cls) -> int:
        """Containers whose kernel is gone, on every engine this user reaches."""
        settings = _settings()
        urls = [url for url in (discovery.configured_url(settings.url),) if url]
        urls += [
            c.url
            for c in discovery.candidates(settings.docker_group)
            if c.usable and os.access(c.url.removeprefix("unix://"), os.W_OK)
        ]
        return reap_containers(dict.fromkeys(urls))

    @classmethod
    def availability(cls) -> Availability:
        """An engine answers and the configured image is there (cached for a few seconds)."""
        global _availability_cache
        if _availability_cache and time.monotonic() - _availability_cache[0] < _AVAILABILITY_TTL:
            return _availability_cache[1]
        settings = _settings()
        if importlib.util.find_spec("docker") is None:
            return Availability(False, "the Docker SDK is not installed", install_hint("docker"))
        try:
            engine = discovery.choose(settings.url, settings.docker_group, podman_idle=settings.podman_idle)
            found = engine.client.images.list(name=settings.image)
            facts = engine.facts
        except BackendUnavailableError as error:
            result = Availability(False, error.reason, error.fix)
        except Exception as error:  # any failure to talk to the engine means "not here"
            result = Availability(
                False,
                f"the container engine at {discovery.configured_url(settings.url) or 'auto'} failed "
                f"({type(error).__name__}: {error})",
                "start it, or set DockerConfig.url, or pass --backend seccomp",
            )
        else:
            notes: tuple[str, ...] = (
                f"engine {engine.url} ({facts.kind}, {'rootless' if facts.rootless else 'rootful'})",
            )
            if not facts.cgroup_limits:
                notes += (
                    "no cgroup limits here: --mem is RLIMIT_DATA per process, --pids RLIMIT_NPROC, --cpus refused",
                )
            result = (
                Availability(True, notes=(f"image {settings.image}", *notes))
                if found
                else Availability(
                    False, f"image {settings.image} is missing from {engine.url}", _image_fix(settings, facts.kind)
                )
            )
        _availability_cache = (time.monotonic(), result)
        return result

    @classmethod
    def admit(cls, spec: RunSpec, policy: Policy) -> RunSpec | None:
        """The runtime the administrator's policy forces (``runtime: runsc``); another asked for is refused."""
        forced = policy.forced.get("runtime")
        if forced is None:
            return None
        asked = spec.placement.runtime if isinstance(spec.placement, ContainerOptions) else None
        if asked not in (None, forced.value):
            raise PolicyError(
                f"--runtime {asked}: the administrator's policy ({forced.source}) runs every container under "
                f"{forced.value}; drop --runtime",
                forced.source,
            )
        return dataclasses.replace(spec, placement=ContainerOptions(forced.value))

    def bound_by(self, policy: Policy) -> None:
        """The warm pool under the policy's ``warm_containers``: its least and its most."""
        self.pool.size = policy.capped("warm_containers", self.pool.size)
        self.pool.most = policy.capped("warm_containers", self.pool.most)

    def initialize(self) -> None:
        spec = RunSpec(limits=self.config.default_limits().only(self.enforced_limits))
        self.pool.warm(self._key(spec, self.settings.image))

    def env_builder(self, env: EnvSpec | None = None) -> ImageEnvBuilder:
        """Runtime envs (``--pip`` ...) become derived images of the run's image (``--image``, else this
        backend's)."""
        return ImageEnvBuilder(self.image(env), self.config.ca_bundle or None, self.engine)

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """The image's digest (asked of the engine each time: a tag rebuilt is another image), the
        engine and runtime, and what the container is made with besides the limits."""
        image = self.image(spec.runtime_env)
        return {
            **super().identity(spec),
            "engine": self.engine.url,
            "runtime": self._runtime(spec),
            "image": image,
            "digest": self.engine.client.api.inspect_image(image)["Id"],
            "user": self.settings.user,
            "tmp_size": self.settings.tmp_size,
        }

    def image(self, env: EnvSpec | None) -> str:
        return (env.image if env else None) or self.settings.image

    def _runtime(self, spec: RunSpec) -> str | None:
        asked = spec.placement.runtime if isinstance(spec.placement, ContainerOptions) else None
        return asked or self.settings.runtime or None

    def _key(self, spec: RunSpec, image: str) -> PoolKey:
        limits = dataclasses.replace(spec.limits, timeout=None)
        if limits.hosts is not None:  # every host list, one container: the list is the gate's, given at run time
            limits = dataclasses.replace(limits, network=_SOME_HOSTS)
        return PoolKey(image, limits, spec.mounts, self._runtime(spec))

    def _plan(self, key: PoolKey) -> ContainerPlan:
        """The container for ``key`` (worked out once per key); refuses what the engine cannot keep."""
        made = self._plans.get(key)
        if made is None:
            made = plan(key.limits, key.mounts, engine=self.engine, settings=self.settings, runtime=key.runtime)
            self._plans[key] = made
        return made

    def _make_slot(self, key: PoolKey, run_label: str, container_plan: ContainerPlan | None = None) -> Slot:
        labels = {
            f"{LABEL}.run": run_label,
            f"{LABEL}.kernel": self.kernel_id,
            f"{LABEL}.owner-pid": str(os.getpid()),
            f"{LABEL}.boot-id": boot_id(),
            **self.labels,
        }
        return Slot(self.engine, key.image, container_plan or self._plan(key), labels, self.settings.user)

    def submit(self, submission: Submission) -> TaskHandle:
        spec, environment = submission.spec, submission.environment
        image = environment.image if environment and environment.image else self.settings.image
        key = self._key(spec, image)
        container_plan = self._plan(key)  # a runtime the engine cannot keep is refused here
        request = build_request(
            submission.code,
            inputs=submission.inputs,
            outputs=spec.outputs,
            trust=spec.trust,
            cwd="/tmp",
            confine=_confine(container_plan, spec.limits),
            env=dict(spec.env),
            sys_path=environment.sys_path if environment else (),
            working_dir=str(environment.working_dir) if environment and environment.working_dir else None,
        )
        self.kernel_id = submission.kernel_id
        if spec.session is not None:
            return self._submit_to_session(submission, key, request)
        asked = time.time()
        with self._engine_errors(image):
            slot = self.pool.take(key, str(submission.run_id))
        try:
            gate = gate_for(self.name, spec.limits.hosts, slot.folder / "out" / _GATE)
        except BaseException:
            self.pool.discard(slot)
            raise
        run = _ContainerRun(submission, self, slot, key, container_plan, gate)
        self.runs.add(run)
        try:
            run.start(request, "pool" if slot.made < asked else "made")
        except BaseException:
            self.forget(submission.run_id)
            self.pool.discard(slot)
            if gate is not None:
                gate.close()
            raise
        return run.handle

    @contextlib.contextmanager
    def _engine_errors(self, image: str) -> Iterator[None]:
        """The engine's failures to make a container, as what the user can do about them."""
        import docker.errors
        import requests.exceptions

        try:
            yield
        except docker.errors.ImageNotFound as error:
            raise BackendUnavailableError(
                self.name, f"image {image} is missing", f"build it: {build_command(image)}"
            ) from error
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as error:
            raise BackendUnavailableError(
                self.name,
                f"the container engine at {self.engine.url} failed: {error}",
                "check it (`docker info` / `podman info`), or pass --backend seccomp",
            ) from error

    def _submit_to_session(self, submission: Submission, key: PoolKey, request: bytes) -> TaskHandle:
        """A cell of session ``spec.session``: in its container when it lives (after the cell it
        runs now), else in one made now; a later cell's request is only its code and values."""
        session = self.sessions.enter(submission, lambda: self._start_session(submission, key))
        cell = ContainerSessionCell(submission, self, session)
        return self.start_cell(cell, lambda: cell.start(request if session.cells == 1 else later_request(submission)))

    def _start_session(self, submission: Submission, key: PoolKey) -> ContainerSession:
        """Its container, made, started and ready; ``submission.stop`` set meanwhile (the broker's
        kernel went) stops it at the next step or while it boots, and removes what was made."""
        spec, stop = submission.spec, submission.stop
        assert spec.session is not None
        with self._engine_errors(key.image):
            slot = self._make_slot(key, f"session-{spec.session}", session_plan(self._plan(key)))
            gate = None
            try:
                gate = gate_for(self.name, spec.limits.hosts, slot.folder / "out" / _GATE)  # for the session's life
                if stop is not None and stop.is_set():
                    raise TaskCancelledError("cancelled before its sandbox container started")
                slot.start()
                slot.wait_ready(stop=stop)
                session = ContainerSession(spec.session, self.name, spec, slot, self.engine)
            except BaseException:
                if gate is not None:
                    gate.close()
                slot.discard()
                raise
        session.gate = gate
        return session

    def fork_session(self, parent: str, name: str, say: Callable[[str], None]) -> None:
        """Refused, naming what is missing here (``sessions.fork_refusal``)."""
        facts = self.engine.facts
        where = f"{'rootless' if facts.rootless else 'rootful'} {facts.kind} at {self.engine.url}"
        raise BackendUnavailableError(self.name, *fork_refusal(where))

    def cancel(self, handle: TaskHandle) -> bool:
        return self.runs.cancel(handle.run_id)

    def sample(self, handle: TaskHandle) -> Usage | None:
        run = self.runs.get(handle.run_id)  # a session's cell samples its container as a run does
        if run is None or not run.sampler.samples:
            return None
        return {"memory": run.sampler.memory, "cpu_seconds": run.sampler.cpu_seconds}

    def forget(self, run_id: int) -> None:
        self.runs.forget(run_id)

    def shutdown(self) -> None:
        self.runs.shutdown()
        self.sessions.close()
        self.pool.close()

    def get_available_resources(self) -> dict[str, Any]:
        info = self.engine.client.info()
        return {
            "engine": self.engine.url,
            "cpus": info.get("NCPU"),
            "memory": info.get("MemTotal"),
            "idle_containers": self.pool.idle_count(),
            "gpus": "nvidia" in self.engine.facts.runtimes,
        }


_GATE = "proxy.sock"  # a host-list run's proxy gate, in the slot's out/ folder (mounted at /jx/out)
_SOME_HOSTS = HostList(())  # a pool key's network for any host list: a container with no network


def _confine(container_plan: ContainerPlan, limits: Limits) -> Plan:
    """What the bootstrap does to itself in the container: the rlimits, and a host list's relay."""
    confine: Plan = {"rlimits": container_plan.rlimits}
    if limits.hosts is not None:
        confine["relay"] = {"socket": f"/jx/out/{_GATE}", "port": RELAY_PORT}
    return confine


def _image_fix(settings: DockerConfig, kind: str) -> str:
    fix = f"build it: {build_command(settings.image)}"
    if kind == "podman":
        fix += " (or, where root's Docker has it: jupyter-exec images copy base --to this engine)"
    return fix


class _ContainerRun(KillableRun):
    """One run in one container: sends the request, pumps the streams, enforces the clock."""

    def __init__(
        self,
        submission: Submission,
        backend: ContainerBackend,
        slot: Slot,
        key: PoolKey,
        container_plan: ContainerPlan,
        gate: Gate | None,
    ) -> None:
        self.submission, self.backend, self.slot, self.key, self.gate = submission, backend, slot, key, gate
        self.plan = container_plan
        self.container = slot.container
        self.handle = TaskHandle(submission, backend)
        self.reader = ProtocolReader(submission.sink, submission.spec.trust)
        self.sampler = Sampler(backend.engine, self.container.id)

    def start(self, request: bytes, pool_note: str | None = None) -> None:
        self.reader.feed(self.slot.wait_ready())
        self.handle.mark("sandbox_ready", note=pool_note)
        self.slot.send_request(request)
        self.handle.started = time.time()
        self.start_pump()

    def kill(self) -> None:
        try:
            self.backend.engine.retry(self.container.kill, "kill the container")
        except Exception as error:
            if not (gone(error) or stopped(error)):
                raise

    def release(self) -> None:
        self.sampler.stop()
        self.backend.pool.discard(self.slot)
        self.backend.forget(self.submission.run_id)

    def after(self) -> None:
        self.backend.pool.warm(self.key)

    def stream_until_exit(self) -> Outcome:
        """Protocol, stdout and stderr until every process in the container has let go of them,
        then how it ended; resource sampling starts once the run has lasted a moment."""

        def start_sampling(elapsed: float) -> None:
            if not self.sampler.started and elapsed > _SAMPLE_AFTER:
                self.sampler.start()

        self.stream(
            {self.slot.protocol_fd: "protocol", self.slot.stdout_fd: "stdout", self.slot.stderr_fd: "stderr"},
            start_sampling,
        )
        return self._outcome()

    def _outcome(self) -> Outcome:
        reader = self.reader
        clean_exit = (
            reader.envelope is not None
            and reader.exit_status is not None
            and os.WIFEXITED(reader.exit_status)
            and not (self.timed_out or self.cancel_requested)
        )
        oom_killed, wait_status = False, reader.exit_status or 0
        if not clean_exit:  # ask the engine how the container ended
            wait_status = self._container_status() if reader.exit_status is None else reader.exit_status
            oom_killed = self._oom_killed(wait_status)
        usage = reader.envelope.usage if reader.envelope else {}
        peaks = [p for p in (self.sampler.peak_memory, usage.get("max_rss")) if p]
        outcome = classify(
            run_id=self.submission.run_id,
            limits=self.submission.spec.limits,
            reader=reader,
            wait_status=wait_status,
            cancelled=self.cancel_requested,
            timed_out=self.timed_out,
            oom_killed=oom_killed,
            peak_memory=max(peaks) if peaks else None,
            cpu_seconds=max(self.sampler.cpu_seconds or 0, usage.get("cpu_seconds") or 0) or None,
            what="the sandbox container",
        )
        outcome.details["container"] = self.container.id[:12]
        outcome.details["engine"] = self.backend.engine.url
        if self.key.runtime:
            outcome.details["runtime"] = self.key.runtime
        if self.plan.notes:
            outcome.details["limits"] = list(self.plan.notes)
        outcome.details["resources"] = self.sampler.summary()
        if self.gate is not None:
            traffic = self.gate.close()
            outcome.details["network"], outcome.connections = traffic.summary(), traffic.rows()
        return outcome

    def _container_status(self) -> int:
        """The wait status of the container's pid 1, which did not report (it was killed, or the
        whole container died): the engine's exit code, or SIGKILL if it is removed already."""
        engine = self.backend.engine
        try:
            code = engine.retry(lambda: self.container.wait(timeout=30), "wait for the container")["StatusCode"]
        except Exception as error:
            if not gone(error):
                raise
            return signal.SIGKILL
        return code - 128 if code > 128 else code << 8

    def _oom_killed(self, wait_status: int) -> bool:
        return oom_event(self.backend.engine, self.container.id, self.key.limits, self.handle.started, wait_status)
