"""``DockerConfig``: the settings of the container backend; ``ContainerOptions``: a run's own."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import Configurable

from jupyter_exec.config import env_trait
from jupyter_exec.errors import SpecError
from jupyter_exec.limits import LIMITS
from jupyter_exec.spec import Placement

from .discovery import PODMAN_IDLE

__all__ = ["DEFAULT_IMAGE", "ContainerOptions", "DockerConfig"]

DEFAULT_IMAGE = "jupyter-exec/base:latest"  # built by `jupyter-exec images build base`


def _default_user() -> str:
    """The kernel's own uid, or nobody when the kernel is root: a cell never runs as root."""
    uid = os.getuid()
    return f"{uid}:{os.getgid()}" if uid else "65534:65534"


class DockerConfig(Configurable):
    """Settings of the container backend: ``%config DockerConfig.NAME = ...`` (before the kernel's
    first container cell), Jupyter config files, or ``JX_CONTAINER_*`` / ``JX_DOCKER_*`` variables."""

    url = env_trait(
        Unicode(
            help="The container engine: a Docker-API address like unix:///run/user/1000/podman/podman.sock "
            "or tcp://host:2376, or 'auto': DOCKER_HOST if set, else rootful Docker for root; for anyone "
            "else rootless Docker, then the user's Podman (its API service started on demand), then a "
            "root daemon not reached only through the docker group."
        ),
        "JX_CONTAINER_URL",
        "auto",
    )
    docker_group = env_trait(
        Bool(
            help="Let 'auto' use a root daemon's socket this user reaches only through the docker group "
            "(root-equivalent: anyone in it can start a privileged container)."
        ),
        "JX_CONTAINER_DOCKER_GROUP",
        False,
    )
    podman_idle = env_trait(
        Float(
            help="Seconds the user's Podman API service, when a kernel started it ('auto'), stays after its "
            "last request. It is shared by the user's kernels, which start it again when they find it "
            "gone; 0 keeps it running for good."
        ),
        "JX_PODMAN_IDLE",
        PODMAN_IDLE,
    )
    runtime = env_trait(
        Unicode(
            help="OCI runtime for the cells' containers, e.g. 'runsc' (gVisor: a user-space kernel "
            "between the cell and the host's); '' for the engine's default. --runtime overrides it; "
            "the administrator's policy (runtime: NAME) can force one."
        ),
        "JX_CONTAINER_RUNTIME",
        "",
    )

    image = env_trait(
        Unicode(help="Image cells run in. Build the default with `jupyter-exec images build base [--offline]`."),
        "JX_DOCKER_IMAGE",
        DEFAULT_IMAGE,
    )
    tmp_size = env_trait(
        Unicode(help="Size of the writable tmpfs at /tmp (counts towards --mem), e.g. '256m'."),
        "JX_DOCKER_TMP_SIZE",
        "256m",
    )
    shm_size = env_trait(
        Unicode(help="Size of /dev/shm for a run without a shm limit (--shm, ExecConfig.shm = ''), e.g. '64m'."),
        "JX_DOCKER_SHM_SIZE",
        LIMITS["shm"].default or "",  # a run's own /dev/shm is that size whether or not it asks for one
    )
    nofile = env_trait(Int(help="Open-file limit (ulimit nofile) in the container."), "JX_DOCKER_NOFILE", 1024)
    user = env_trait(
        Unicode(
            help="uid:gid the cell runs as; never root. Default: the kernel's own uid, or 65534 "
            "(nobody) when the kernel is root."
        ),
        "JX_DOCKER_USER",
        _default_user,
    )
    pool_max = env_trait(
        Int(
            help="Most warm containers of one kind the pool makes ahead while cells come faster than a "
            "container can be made (a notebook re-run, a loop, a map); ExecConfig.pool_size is the least. "
            "The administrator's policy (warm_containers) can lower it. 0 keeps just the least."
        ),
        "JX_CONTAINER_POOL_MAX",
        4,
    )
    retries = env_trait(
        Int(help="Attempts for a daemon call that fails transiently (connection reset, 5xx); 1 turns retrying off."),
        "JX_DOCKER_RETRIES",
        4,
    )
    retry_wait = env_trait(
        Float(help="Seconds before the first retry, doubled each time."), "JX_DOCKER_RETRY_WAIT", 0.2
    )
    ca_bundle = env_trait(
        Unicode(
            help="CA bundle a --network cell should trust (TLS-intercepting proxies), mounted "
            "read-only with SSL_CERT_FILE/PIP_CERT pointing at it; '' for none."
        ),
        "JX_DOCKER_CA_BUNDLE",
        "",
    )


@dataclass(frozen=True)
class ContainerOptions(Placement):
    """A container run's own options (its ``RunSpec.placement``): the OCI runtime (``--runtime``)."""

    runtime: str | None = None  # None: DockerConfig.runtime, else the engine's default

    @classmethod
    def parse(cls, runtime: str | None) -> ContainerOptions:
        if runtime is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", runtime):
            raise SpecError(f"--runtime: {runtime!r} is not a runtime name; write e.g. --runtime runsc")
        return cls(runtime or None)
