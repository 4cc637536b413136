"""Cells in throw-away, locked-down containers (the ``docker`` backend).

``backend`` runs a cell in a container, ``config`` holds ``DockerConfig``, ``engine`` the
client connection and its retries, ``pool`` the warm containers (and the reaper),
``stats`` the resource samples, ``images`` the sandbox images (``jupyter-exec images``)
and ``envbuilder`` the derived images of runtime envs (``--pip``).
"""

from .backend import DockerBackend
from .config import DockerConfig

__all__ = ["DockerBackend", "DockerConfig"]
