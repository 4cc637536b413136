"""jupyter-exec: run a notebook cell in a sandbox or on Ray, with limits, live output and a record.

In a notebook: ``%load_ext jupyter_exec``, then ``%%sandbox``. From Python::

    from jupyter_exec import Manager, RunSpec, Limits
    Manager().run("print(1 + 1)", RunSpec(backend="seccomp", limits=Limits.parse(timeout="5s")))
"""

from __future__ import annotations

from typing import Any

from .errors import (
    BackendUnavailableError,
    JupyterExecError,
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
from .fanout import map
from .manager import Manager, RunResult
from .spec import Limits, Mount, RunSpec
from .trace import explore

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "JupyterExecError",
    "Limits",
    "Manager",
    "Mount",
    "NodeFailedError",
    "PolicyError",
    "RemoteError",
    "ResourceLimitError",
    "RunResult",
    "RunSpec",
    "SpecError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TransferError",
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
