"""``DockerConfig``: the settings of the container backend."""

from __future__ import annotations

import os

from traitlets import Float, Int, Unicode
from traitlets.config import Configurable

from jupyter_exec.config import env_trait

__all__ = ["DockerConfig"]


def _default_user() -> str:
    """The kernel's own uid, or nobody when the kernel is root: a cell never runs as root."""
    uid = os.getuid()
    return f"{uid}:{os.getgid()}" if uid else "65534:65534"


class DockerConfig(Configurable):
    """Settings of the Docker backend: ``%config DockerConfig.NAME = ...`` (before the kernel's
    first Docker cell), Jupyter config files, or ``JX_DOCKER_*`` variables."""

    image = env_trait(
        Unicode(help="Image cells run in. Build the default with `jupyter-exec images build base [--offline]`."),
        "JX_DOCKER_IMAGE",
        "jupyter-exec/base:latest",
    )
    tmp_size = env_trait(
        Unicode(help="Size of the writable tmpfs at /tmp (counts towards --mem), e.g. '256m'."),
        "JX_DOCKER_TMP_SIZE",
        "256m",
    )
    shm_size = env_trait(
        Unicode(help="Size of /dev/shm for a run without a shm limit (--shm, ExecConfig.shm = ''), e.g. '64m'."),
        "JX_DOCKER_SHM_SIZE",
        "64m",
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
