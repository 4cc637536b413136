"""The container engine connection: one client per process, daemon errors mapped, transient ones retried.

Every call into the daemon that creates or starts something goes through ``retry``:
a connection reset or a 5xx from the daemon is tried again with backoff; a 4xx (a bad
request, a missing image) is not, and a failing cell is never retried because cells
never reach this layer.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from jupyter_exec.errors import BackendUnavailableError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "client", "daemon_address", "has_nvidia_runtime", "is_transient", "retry"]

T = TypeVar("T")
_lock = threading.Lock()
_client: Any = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient daemon failure is retried: ``attempts`` in all, ``wait`` s doubling.
    The backend makes its own from ``DockerConfig.retries`` / ``retry_wait``."""

    attempts: int = 4
    wait: float = 0.2


DEFAULT_RETRY = RetryPolicy()


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _unreachable(error: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        "docker",
        f"Docker daemon not reachable at {daemon_address()} ({error})",
        "start it (e.g. `dockerd &` as root, or `systemctl start docker`) or pass --backend seccomp",
    )


def _socket_refused() -> BackendUnavailableError | None:
    """The error for a user the daemon's socket refuses (not in its group), before the SDK
    words it as an unreachable daemon; None when that is not the problem."""
    address = daemon_address()
    path = address.removeprefix("unix://")
    if path == address or not os.path.exists(path) or os.access(path, os.R_OK | os.W_OK):
        return None
    gid = os.stat(path).st_gid
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    user = pwd.getpwuid(os.geteuid()).pw_name
    return BackendUnavailableError(
        "docker",
        f"Docker's socket {path} is there, but only the {group} group may use it and {user} is not in it",
        f"that group is root-equivalent: an administrator adds you (usermod -aG {group} {user}) only if you may be "
        "root; otherwise pass --backend seccomp (rootless engines are not supported yet)",
    )


def client(timeout: float = 60) -> Any:
    """The shared ``docker.DockerClient``; ``BackendUnavailableError`` when there is none."""
    global _client
    with _lock:
        if _client is not None:
            return _client
        if (refused := _socket_refused()) is not None:
            raise refused
        try:
            import docker
        except ImportError as error:
            raise BackendUnavailableError(
                "docker", "the Docker SDK is not installed", "pip install 'jupyter-exec[docker]'"
            ) from error
        try:
            candidate = docker.DockerClient(
                base_url=daemon_address(), version="auto", timeout=timeout, max_pool_size=32
            )
        except docker.errors.DockerException as error:
            raise _unreachable(error) from error
        _client = candidate
        return _client


def is_transient(error: BaseException) -> bool:
    """A connection problem or a daemon-side (5xx) failure: worth trying again."""
    import docker.errors
    import requests.exceptions

    if isinstance(error, docker.errors.APIError):
        return error.status_code is not None and error.status_code >= 500 and error.status_code != 501
    return isinstance(error, (requests.exceptions.ConnectionError, ConnectionError))


def retry(call: Callable[[], T], *, what: str = "docker call", policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """``call()`` (``what`` names it for tracebacks), tried again while it fails transiently."""
    attempts, wait = max(1, policy.attempts), policy.wait
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            if attempt >= attempts or not is_transient(error):
                raise
        time.sleep(wait * 2 ** (attempt - 1))
        attempt += 1


@functools.cache
def has_nvidia_runtime() -> bool:
    """Whether the daemon can hand GPUs to a container (the NVIDIA runtime is registered)."""
    info = client().info()
    return "nvidia" in (info.get("Runtimes") or {})
