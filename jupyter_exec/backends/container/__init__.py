"""Cells in throw-away, locked-down containers (the ``container`` backend; ``docker`` is its other name).

``backend`` runs a cell in a container; ``config`` holds ``DockerConfig`` and a run's
``ContainerOptions`` (``--runtime``); ``engine`` talks to one engine (client, retries,
what it says of itself) and ``discovery`` picks it (rootful or rootless Docker, Podman);
``hostconfig`` is the lock-down and the limits as an engine can keep them, ``seccomp``
our seccomp profile, ``runtimes`` what a runtime (gVisor's ``runsc``) needs registered;
``slot`` one container bound to its kernel, ``pool`` the warm containers and the
reaper; ``stats`` the resource samples, ``images`` the sandbox images (``jupyter-exec
images``) and ``envbuilder`` the derived images of runtime envs (``--pip``).
"""

from .backend import ContainerBackend
from .config import ContainerOptions, DockerConfig

__all__ = ["ContainerBackend", "ContainerOptions", "DockerConfig"]
