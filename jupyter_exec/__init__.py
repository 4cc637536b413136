"""jupyter-exec: run a notebook cell in a sandbox or on Ray, with limits, live output and a record.

In a notebook: ``%load_ext jupyter_exec``, then ``%%sandbox``. From Python::

    from jupyter_exec import Manager, RunSpec, Limits
    Manager().run("print(1 + 1)", RunSpec(backend="seccomp", limits=Limits.parse(timeout="5s")))

This module is the public API; everything else is internal and may change.
"""

from __future__ import annotations

from typing import Any

from .current import current_manager
from .envs import EnvSpec
from .errors import (
    BackendUnavailableError,
    EnvBuildError,
    JupyterExecError,
    MapError,
    NodeFailedError,
    PolicyError,
    RemoteError,
    ResourceLimitError,
    SpecError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    TransferError,
)
from .manager import Manager, RunResult
from .mapping import map
from .spec import Limits, Mount, RunSpec
from .status import Status
from .trace import explore

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "EnvBuildError",
    "EnvSpec",
    "JupyterExecError",
    "Limits",
    "Manager",
    "MapError",
    "Mount",
    "NodeFailedError",
    "PolicyError",
    "RemoteError",
    "ResourceLimitError",
    "RunResult",
    "RunSpec",
    "SpecError",
    "Status",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TransferError",
    "current_manager",
    "explore",
    "load_ipython_extension",
    "map",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_exec``: register ``%%sandbox``, ``%%rayrun`` and ``%jx``."""
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unregister

    unregister(ipython)
