"""One container engine: its address, its client, its retries, and what it says of itself.

Any engine that speaks the Docker API is driven through the Docker SDK: rootful Docker,
rootless Docker, Podman's API service (``podman system service``). ``discovery`` finds them
and picks one; an ``Engine`` talks to one. Its client is made once per address and
process; its ``facts`` (kind, rootless or not, cgroup mode, the limits it can set through
cgroups, its runtimes and their arguments) are asked once.

Every call into the engine that creates or starts something goes through ``retry``: a
connection reset or a 5xx is tried again with backoff; a 4xx (a bad request, a missing
image) is not, and a failing cell is never retried because cells never reach this layer.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.spec import Limits

from .seccomp import profile_file, profile_text

__all__ = ["DEFAULT_RETRY", "Engine", "Facts", "RetryPolicy", "container_events", "is_transient", "oom_event", "retry"]

T = TypeVar("T")
CGROUP_LIMITS = frozenset({"memory", "pids", "cpus"})  # the Limits an engine sets through cgroups
_lock = threading.Lock()
_clients: dict[str, Any] = {}


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient engine failure is retried: ``attempts`` in all, ``wait`` s doubling.
    The backend makes its own from ``DockerConfig.retries`` / ``retry_wait``."""

    attempts: int = 4
    wait: float = 0.2


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Facts:
    """What an engine says of itself."""

    kind: str  # docker | podman
    version: str
    rootless: bool
    cgroup: str  # v1 | v2 | none
    cgroup_limits: frozenset[str]  # of CGROUP_LIMITS: what it can set per container through cgroups
    runtimes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> runtime arguments
    default_runtime: str = "runc"
    storage: str = ""

    def describe(self) -> str:
        """One line for ``doctor``."""
        limits = ", ".join(sorted(self.cgroup_limits)) or "none"
        return (
            f"{self.kind} {self.version}, {'rootless' if self.rootless else 'rootful'}, cgroup {self.cgroup} "
            f"(limits through cgroups: {limits}), storage {self.storage or '?'}, "
            f"runtimes: {', '.join(sorted(self.runtimes)) or self.default_runtime}"
        )


def _docker_facts(info: dict[str, Any]) -> Facts:
    security = " ".join(info.get("SecurityOptions") or [])
    cgroup = "none" if info.get("CgroupDriver") == "none" else f"v{info.get('CgroupVersion') or '1'}"
    rootless = "name=rootless" in security
    able = {"memory": info.get("MemoryLimit"), "pids": info.get("PidsLimit"), "cpus": info.get("CpuCfsQuota")}
    limits = frozenset(k for k, ok in able.items() if ok) if cgroup != "none" else frozenset()
    if rootless and cgroup == "v1":
        limits = frozenset()  # cgroup v1 is never delegated to an unprivileged daemon
    return Facts(
        "docker",
        str(info.get("ServerVersion", "")),
        rootless,
        cgroup,
        limits,
        {name: tuple(spec.get("runtimeArgs") or ()) for name, spec in (info.get("Runtimes") or {}).items()},
        str(info.get("DefaultRuntime") or "runc"),
        str(info.get("Driver") or ""),
    )


def _podman_facts(info: dict[str, Any], libpod: dict[str, Any]) -> Facts:
    """Podman's Docker-compatible ``/info`` claims every limit and lists runtimes that are not
    installed; its own ``/libpod/info`` tells the truth (rootless, cgroup controllers)."""
    host = libpod.get("host") or {}
    rootless = bool((host.get("security") or {}).get("rootless"))
    controllers = set(host.get("cgroupControllers") or ())
    names = {"memory": "memory", "pids": "pids", "cpus": "cpu"}
    return Facts(
        "podman",
        str((libpod.get("version") or {}).get("Version") or info.get("ServerVersion", "")),
        rootless,
        str(host.get("cgroupVersion") or "v1"),
        frozenset(limit for limit, controller in names.items() if controller in controllers),
        {
            name: tuple(spec.get("runtimeArgs") or ())
            for name, spec in (info.get("Runtimes") or {}).items()
            if os.path.exists(str(spec.get("path", "")))  # listed in containers.conf is not installed
        },
        str(info.get("DefaultRuntime") or "runc"),
        str((libpod.get("store") or {}).get("graphDriverName") or info.get("Driver") or ""),
    )


@functools.cache
def _facts(url: str) -> Facts:
    client = _client(url)
    version = client.version()
    info = client.info()
    if any("podman" in str(part.get("Name", "")).lower() for part in version.get("Components") or ()):
        libpod = client.api.get(f"{client.api.base_url}/v{version.get('Version', '4.0.0')}/libpod/info")
        libpod.raise_for_status()
        return _podman_facts(info, libpod.json())
    return _docker_facts(info)


def _client(url: str, timeout: float = 60) -> Any:
    """The ``docker.DockerClient`` for ``url``, made once per process."""
    with _lock:
        if url in _clients:
            return _clients[url]
        try:
            import docker
        except ImportError as error:
            raise BackendUnavailableError(
                "container", "the Docker SDK is not installed", "pip install 'jupyter-exec[docker]'"
            ) from error
        try:
            client = docker.DockerClient(base_url=url, version="auto", timeout=timeout, max_pool_size=32)
        except docker.errors.DockerException as error:
            raise BackendUnavailableError(
                "container",
                f"no container engine answers at {url} ({error})",
                "start one (dockerd, or `podman system service`), or pass --backend seccomp",
            ) from error
        _clients[url] = client
        return client


@dataclass(frozen=True)
class Engine:
    """A container engine at ``url``; cheap to make, the client and facts are shared per address.
    ``revive`` starts the engine again where it may have ended on its own (the user's Podman
    service, after idling): ``retry`` calls it when the engine does not answer."""

    url: str
    retry_policy: RetryPolicy = DEFAULT_RETRY
    revive: Callable[[], object] | None = field(default=None, compare=False, repr=False)

    @property
    def client(self) -> Any:
        return _client(self.url)

    @property
    def facts(self) -> Facts:
        return _facts(self.url)

    def retry(self, call: Callable[[], T], what: str) -> T:
        return retry(call, what=what, policy=self.retry_policy, revive=self.revive)

    def seccomp_option(self, folder: Path, *, gvisor: bool = False) -> str:
        """The ``security_opt`` entry of our seccomp profile: Docker takes the profile itself,
        Podman's API takes a path (to a file the engine's user can read)."""
        if self.facts.kind == "podman":
            return f"seccomp={profile_file(folder, gvisor=gvisor)}"
        return f"seccomp={profile_text(gvisor=gvisor)}"


def is_transient(error: BaseException) -> bool:
    """A connection problem or an engine-side (5xx) failure: worth trying again."""
    import docker.errors

    if isinstance(error, docker.errors.APIError):
        return error.status_code is not None and error.status_code >= 500 and error.status_code != 501
    return _unanswered(error)


def retry(
    call: Callable[[], T],
    *,
    what: str = "engine call",
    policy: RetryPolicy = DEFAULT_RETRY,
    revive: Callable[[], object] | None = None,
) -> T:
    """``call()`` (``what`` names it for tracebacks), tried again while it fails transiently;
    ``revive()`` first when the engine did not answer at all."""
    attempts, wait = max(1, policy.attempts), policy.wait
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            if attempt >= attempts or not is_transient(error):
                raise
            if revive is not None and _unanswered(error):
                revive()
        time.sleep(wait * 2 ** (attempt - 1))
        attempt += 1


def _unanswered(error: BaseException) -> bool:
    """The engine could not be reached at all (nothing listens, the connection broke)."""
    import requests.exceptions

    return isinstance(error, (requests.exceptions.ConnectionError, ConnectionError))


def oom_event(engine: Engine, container_id: str, limits: Limits, since: float, wait_status: int) -> bool:
    """Whether the engine's OOM killer struck in the container, from the ``oom`` event the engine
    logs (its state says so only once a container has stopped, and ours lingers until released).
    Asked only of a process ended by SIGKILL under a memory limit the engine keeps with a cgroup;
    the event may lag the kill a moment (``container_events``)."""
    killed = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
    if not killed or limits.memory is None or "memory" not in engine.facts.cgroup_limits:
        return False
    try:
        return bool(container_events(engine, container_id, since, event="oom"))
    except Exception:  # no event log to read: no evidence of an OOM kill
        return False


def container_events(engine: Engine, container_id: str, since: float, event: str | None = None) -> list[dict]:
    """The events of ``container_id`` (only ``event``, if given) in the engine's log, from
    ``since`` to a moment past now: an event may lag what it tells. Podman's file log stops
    reading at that moment whether or not it has read the lines before it (a large log, a
    second or so before), so Podman is given two seconds, Docker one."""
    filters = {"container": container_id, **({"event": event} if event else {})}
    until = int(time.time()) + (2 if engine.facts.kind == "podman" else 1)
    return list(engine.client.api.events(since=int(since) - 1, until=until, filters=filters, decode=True))
