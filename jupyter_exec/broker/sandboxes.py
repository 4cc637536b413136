"""The broker's containers: one container backend per user, made on first use, closed when idle.

Each user's runs go through a ``ContainerBackend`` of their own, the same one a kernel uses
on its own engine (its lock-down, limits per engine, warm pool, stats, runtimes), so every
container carries the user in its labels (``jupyter-exec.user``) from the moment it is made,
pooled ones included, and one user's warm containers never serve another. A user's backend
that has had nothing to do for ``idle_after`` seconds is shut down (its pool emptied).

Runtime envs are built here, on the broker's side, into derived images cached by the hash of
their spec (``EnvCache``): one built for one user is reused for anyone asking for the same
packages. Only requirement strings reach the broker (``wire.parse_run`` refuses local files),
so nothing of one user's files is ever in an image another user runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_exec.backends.container import ContainerBackend, DockerConfig
from jupyter_exec.backends.factory import env_builder_for
from jupyter_exec.config import ExecConfig
from jupyter_exec.envs import BuiltEnv, EnvCache, EnvSpec
from jupyter_exec.envs.builder import Progress
from jupyter_exec.policy import Policy

__all__ = ["USER_LABEL", "Sandboxes"]

USER_LABEL = "jupyter-exec.user"
_DIGEST_TTL = 30.0  # seconds an image's digest is trusted before it is asked again


class Sandboxes:
    """Each user's container backend, the env cache and the images' digests (see the module docstring)."""

    def __init__(self, config: ExecConfig, data_dir: Path, idle_after: float) -> None:
        self.config, self.idle_after = config, idle_after
        self.envs = EnvCache(data_dir / "envs", data_dir / "envs.sqlite3", env_builder_for)
        self._backends: dict[str, ContainerBackend] = {}
        self._used: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._digests: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._close_idle, daemon=True, name="jx-broker-idle").start()

    @contextlib.contextmanager
    def backend(self, user: str, policy: Policy) -> Iterator[ContainerBackend]:
        """``user``'s container backend (its pool bounded by ``policy``, the user's, when it is made),
        held (never closed as idle) while the block runs."""
        with self._lock:
            backend = self._backends.get(user)
            if backend is None:
                backend = ContainerBackend(self.config)
                backend.labels = {USER_LABEL: user}
                self._backends[user] = backend
                fresh = True
            else:
                fresh = False
            self._busy[user] = self._busy.get(user, 0) + 1
        try:
            if fresh:
                backend.bound_by(policy)
                backend.initialize()  # warms this user's pool
            yield backend
        finally:
            with self._lock:
                self._busy[user] -= 1
                self._used[user] = time.monotonic()

    def existing(self, user: str) -> ContainerBackend | None:
        """``user``'s container backend if it is there (nothing is made by asking)."""
        with self._lock:
            return self._backends.get(user)

    def environment(self, backend: ContainerBackend, env: EnvSpec, progress: Progress) -> BuiltEnv:
        """The env built (or found) for ``env`` on ``backend``'s engine."""
        return self.envs.ensure(env, backend.env_builder(env), progress)

    def lease(self, built: BuiltEnv) -> contextlib.AbstractContextManager[Any]:
        return self.envs.lease(built.hash)

    def digest(self, backend: ContainerBackend, image: str) -> str | None:
        """The image's content digest (its id), asked at most every ``_DIGEST_TTL`` seconds."""
        now = time.monotonic()
        cached = self._digests.get(image)
        if cached and now - cached[0] < _DIGEST_TTL:
            return cached[1]
        try:
            found: str | None = backend.engine.client.api.inspect_image(image)["Id"]
        except Exception:  # removed meanwhile, or the engine is away: the audit says unknown
            found = None
        self._digests[image] = (now, found)
        return found

    def image(self) -> str:
        """The image runs start from unless they name one (``DockerConfig.image`` of the broker)."""
        return str(DockerConfig(parent=self.config).image)

    def idle_containers(self, user: str) -> int:
        with self._lock:
            backend = self._backends.get(user)
        return backend.pool.idle_count() if backend is not None else 0

    def _close_idle(self) -> None:
        while not self._closed.wait(min(60.0, self.idle_after)):
            now = time.monotonic()
            with self._lock:
                idle = [
                    user
                    for user in self._backends
                    if not self._busy.get(user)
                    and now - self._used.get(user, now) > self.idle_after
                    and not self._backends[user].list_sessions()  # a session ends by its own idling
                ]
                closing = [self._backends.pop(user) for user in idle]
            for backend in closing:
                backend.shutdown()

    def close(self) -> None:
        """Stop every user's runs and empty their pools."""
        self._closed.set()
        with self._lock:
            closing = list(self._backends.values())
            self._backends.clear()
        for backend in closing:
            backend.shutdown()
