"""``docker``: each cell in a fresh, locked-down container that is removed afterwards.

Lock-down by default: no network (``--network`` gives the default bridge), a read-only
root with a size-limited tmpfs at ``/tmp`` (the cell's working directory and ``HOME``),
no capabilities, ``no-new-privileges``, a non-root user, never the Docker socket.
Limits map to the daemon's own: ``--mem`` to ``mem_limit`` = ``memswap_limit`` (no
swap on top), ``--cpus`` to ``nano_cpus``, ``--pids``, ``--cpu-time`` and ``--fsize`` to
ulimits, ``--gpus`` to device requests (refused up front without the NVIDIA runtime);
``--timeout`` is enforced from the host by killing the container, ``--shm`` is the size
of the container's ``/dev/shm``. ``--mount`` paths appear at their target, read-only
unless ``:rw``.

The cell talks to the kernel through the same bootstrap and protocol as the process
backends, over FIFOs in a read-only bind mount (see ``pool``); stdout and stderr come
over FIFOs of their own. Containers come from a warm pool, each used once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from jupyter_exec.backends.base import (
    Availability,
    ExecutorBackend,
    KillableRun,
    Outcome,
    Submission,
    TaskHandle,
    cancel_run,
)
from jupyter_exec.backends.outcomes import classify
from jupyter_exec.config import ExecConfig, application_config
from jupyter_exec.envs.spec import EnvSpec
from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.extras import install_hint
from jupyter_exec.runner.protocol import ProtocolReader, build_request
from jupyter_exec.spec import Limits, RunSpec
from jupyter_exec.units import parse_size

from . import engine
from .config import DockerConfig
from .envbuilder import ImageEnvBuilder
from .images import build_command
from .pool import LABEL, ContainerPool, PoolKey, Slot, bind, boot_id, reap_containers
from .stats import Sampler

__all__ = ["DockerBackend"]

_SAMPLE_AFTER = 0.3  # seconds: shorter runs are measured by the bootstrap alone
_AVAILABILITY_TTL = 10.0
_availability_cache: tuple[float, Availability] | None = None


class DockerBackend(ExecutorBackend):
    """Runs each cell in its own container from a warm pool; see the module docstring."""

    name: ClassVar[str] = "docker"
    isolation: ClassVar[str] = "docker"
    samples: ClassVar[bool] = True

    def __init__(self, config: ExecConfig) -> None:
        if importlib.util.find_spec("docker") is None:
            raise BackendUnavailableError(self.name, "the Docker SDK is not installed", install_hint("docker"))
        super().__init__(config)
        self.docker = DockerConfig(parent=config)
        if self.docker.user.split(":")[0] in ("0", "root"):
            raise BackendUnavailableError(self.name, "DockerConfig.user must not be root", "set a uid like 65534:65534")
        self.retry_policy = engine.RetryPolicy(self.docker.retries, self.docker.retry_wait)
        self.kernel_id = f"pid-{os.getpid()}"
        self.pool = ContainerPool(config.pool_size, self._make_slot)
        self._runs: dict[int, _DockerRun] = {}

    @classmethod
    def reap(cls) -> int:
        """Containers whose kernel is gone."""
        return reap_containers()

    @classmethod
    def availability(cls) -> Availability:
        """A daemon answers and the configured image is there (cached for a few seconds)."""
        global _availability_cache
        if _availability_cache and time.monotonic() - _availability_cache[0] < _AVAILABILITY_TTL:
            return _availability_cache[1]
        image = DockerConfig(config=application_config()).image
        try:
            docker = engine.client()
            docker.ping()
            found = docker.images.list(name=image)
        except BackendUnavailableError as error:
            result = Availability(False, error.reason, error.fix)
        except Exception as error:  # any failure to talk to the daemon means "not here"
            result = Availability(
                False,
                f"Docker daemon not reachable at {engine.daemon_address()} ({type(error).__name__}: {error})",
                "start it (e.g. `dockerd &` as root) or pass --backend seccomp",
            )
        else:
            result = (
                Availability(True, notes=(f"image {image}",))
                if found
                else Availability(False, f"image {image} is missing", f"build it: {build_command(image)}")
            )
        _availability_cache = (time.monotonic(), result)
        return result

    def initialize(self) -> None:
        self.pool.warm(self._key(RunSpec(limits=self.config.default_limits()), self.docker.image))

    def env_builder(self, env: EnvSpec | None = None) -> ImageEnvBuilder:
        """Runtime envs (``--pip`` ...) become derived images of the run's image (``--image``, else this
        backend's)."""
        return ImageEnvBuilder(self.image(env), self.config.ca_bundle or None)

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        """The image's digest (asked of the daemon each time: a tag rebuilt is another image) and
        what the container is made with besides the limits."""
        image = self.image(spec.runtime_env)
        return {
            **super().identity(spec),
            "image": image,
            "digest": engine.client().api.inspect_image(image)["Id"],
            "user": self.docker.user,
            "tmp_size": self.docker.tmp_size,
        }

    def image(self, env: EnvSpec | None) -> str:
        return (env.image if env else None) or self.docker.image

    def _key(self, spec: RunSpec, image: str) -> PoolKey:
        return PoolKey(image, dataclasses.replace(spec.limits, timeout=None), spec.mounts)

    def _make_slot(self, key: PoolKey, run_label: str) -> Slot:
        labels = {
            f"{LABEL}.run": run_label,
            f"{LABEL}.kernel": self.kernel_id,
            f"{LABEL}.owner-pid": str(os.getpid()),
            f"{LABEL}.boot-id": boot_id(),
        }
        return Slot(key.image, self._create_options(key), labels, self.docker.user, self.retry_policy)

    def _create_options(self, key: PoolKey) -> dict[str, Any]:
        """Everything fixed at ``docker create``: lock-down, limits, mounts."""
        from docker.types import DeviceRequest, Ulimit

        limits: Limits = key.limits
        ulimits = [Ulimit(name="nofile", soft=self.docker.nofile, hard=self.docker.nofile)]
        if limits.fsize is not None:
            ulimits.append(Ulimit(name="fsize", soft=limits.fsize, hard=limits.fsize))
        if limits.cpu_time is not None:
            seconds = max(1, math.ceil(limits.cpu_time))
            ulimits.append(Ulimit(name="cpu", soft=seconds, hard=seconds + 1))
        tmp = parse_size(self.docker.tmp_size, "DockerConfig.tmp_size")
        options: dict[str, Any] = {
            "network_mode": "bridge" if limits.network else "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp},mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "shm_size": limits.shm or parse_size(self.docker.shm_size, "DockerConfig.shm_size"),
            "ulimits": ulimits,
            "working_dir": "/tmp",
            "environment": {
                "HOME": "/tmp",
                "TMPDIR": "/tmp",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "MPLBACKEND": "Agg",
                "LANG": "C.UTF-8",
            },
            "mounts": [bind(m.source, m.target, m.read_only) for m in key.mounts],
        }
        if limits.memory is not None:
            options.update(mem_limit=limits.memory, memswap_limit=limits.memory)
        if limits.cpus is not None:
            options["nano_cpus"] = int(limits.cpus * 1e9)
        if limits.pids is not None:
            options["pids_limit"] = limits.pids
        if limits.gpus is not None:
            options["device_requests"] = [_device_request(DeviceRequest, limits.gpus)]
        if limits.network and self.docker.ca_bundle:
            options["mounts"].append(bind(Path(self.docker.ca_bundle), "/etc/ssl/certs/jupyter-exec-ca.crt", True))
            for name in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
                options["environment"][name] = "/etc/ssl/certs/jupyter-exec-ca.crt"
        return options

    def _refuse_gpus(self, limits: Limits) -> None:
        if limits.gpus is not None and not engine.has_nvidia_runtime():
            raise BackendUnavailableError(
                self.name,
                f"--gpus {limits.gpus}: this Docker daemon has no NVIDIA runtime, so it cannot give "
                "a container GPUs (the cell was not run)",
                "install the NVIDIA Container Toolkit and restart dockerd, drop --gpus, or use %%rayrun --num-gpus",
            )

    def submit(self, submission: Submission) -> TaskHandle:
        import docker.errors
        import requests.exceptions

        spec, environment = submission.spec, submission.environment
        self._refuse_gpus(spec.limits)
        request = build_request(
            submission.code,
            inputs=submission.inputs,
            outputs=spec.outputs,
            trust=spec.trust,
            cwd="/tmp",
            env=dict(spec.env),
            sys_path=environment.sys_path if environment else (),
            working_dir=str(environment.working_dir) if environment and environment.working_dir else None,
        )
        image = environment.image if environment and environment.image else self.docker.image
        key = self._key(spec, image)
        self.kernel_id = submission.kernel_id
        try:
            slot = self.pool.take(key, str(submission.run_id))
        except docker.errors.ImageNotFound as error:
            raise BackendUnavailableError(
                self.name, f"image {image} is missing", f"build it: {build_command(image)}"
            ) from error
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as error:
            raise BackendUnavailableError(
                self.name,
                f"the Docker daemon at {engine.daemon_address()} failed: {error}",
                "check `docker info`, or pass --backend seccomp",
            ) from error
        run = _DockerRun(submission, self, slot, key)
        self._runs[submission.run_id] = run
        try:
            run.start(request)
        except BaseException:
            self.forget(submission.run_id)
            self.pool.discard(slot)
            raise
        return run.handle

    def cancel(self, handle: TaskHandle) -> bool:
        return cancel_run(self._runs.get(handle.run_id))

    def sample(self, handle: TaskHandle) -> dict[str, Any] | None:
        run = self._runs.get(handle.run_id)
        if run is None or not run.sampler.samples:
            return None
        return {"memory": run.sampler.memory, "cpu_seconds": run.sampler.cpu_seconds}

    def forget(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def shutdown(self) -> None:
        for run in list(self._runs.values()):
            cancel_run(run)
        for run in list(self._runs.values()):
            run.handle.wait(10)
        self.pool.close()

    def get_available_resources(self) -> dict[str, Any]:
        info = engine.client().info()
        return {
            "cpus": info.get("NCPU"),
            "memory": info.get("MemTotal"),
            "idle_containers": self.pool.idle_count(),
            "gpus": "nvidia" in (info.get("Runtimes") or {}),
        }


def _device_request(device_request: Any, gpus: str) -> Any:
    if gpus == "all":
        return device_request(count=-1, capabilities=[["gpu"]])
    if gpus.startswith("device="):
        return device_request(device_ids=gpus.removeprefix("device=").split(","), capabilities=[["gpu"]])
    return device_request(count=int(gpus), capabilities=[["gpu"]])


class _DockerRun(KillableRun):
    """One run in one container: sends the request, pumps the streams, enforces the clock."""

    def __init__(self, submission: Submission, backend: DockerBackend, slot: Slot, key: PoolKey) -> None:
        self.submission, self.backend, self.slot, self.key = submission, backend, slot, key
        self.container = slot.container
        self.handle = TaskHandle(submission, backend)
        self.reader = ProtocolReader(submission.sink, submission.spec.trust)
        self.sampler = Sampler(self.container.id)

    def start(self, request: bytes) -> None:
        self.reader.feed(self.slot.wait_ready())
        self.slot.send_request(request)
        self.handle.started = time.time()
        self.start_pump()

    def kill(self) -> None:
        import docker.errors

        try:
            engine.retry(self.container.kill, what="docker kill", policy=self.backend.retry_policy)
        except docker.errors.APIError:
            pass  # not running any more: nothing to kill

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
        if not clean_exit:  # ask the daemon how the container ended
            code = engine.retry(
                lambda: self.container.wait(timeout=30), what="docker wait", policy=self.backend.retry_policy
            )["StatusCode"]
            wait_status = code - 128 if code > 128 else code << 8
            self.container.reload()
            oom_killed = bool(self.container.attrs["State"].get("OOMKilled"))
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
        outcome.details["resources"] = self.sampler.summary()
        return outcome
