"""Every error jupyter-exec raises, in one tree.

::

    JupyterExecError                    root: catch this to catch all of ours
    ├── SpecError (ValueError)          bad limits, units, mounts, env vars: the user's input
    │   └── PolicyError                 refused by the administrator's policy (or it is unreadable)
    ├── TransferError                   a value cannot cross the sandbox boundary safely
    └── TaskError                       the run did not succeed
        ├── RemoteError                 the cell raised; keeps type name, message, remote traceback
        ├── TaskCancelledError          cancelled (interrupt, %jx cancel)
        ├── TaskTimeoutError            wall-clock or CPU-time limit reached
        ├── ResourceLimitError          out of memory, process or file-size limit hit
        └── NodeFailedError             the target died under the run (not the cell's fault)
    BackendUnavailableError             the backend cannot run here; says how to fix it

Errors carry data (run id, status, exit code, log path) so callers need not parse
messages. Lower-level errors are mapped at each boundary with ``raise ... from``.
"""

from __future__ import annotations

import builtins

__all__ = [
    "BackendUnavailableError",
    "JupyterExecError",
    "NodeFailedError",
    "PolicyError",
    "RemoteError",
    "ResourceLimitError",
    "SpecError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TransferError",
    "remote_error",
]


class JupyterExecError(Exception):
    """Root of every jupyter-exec error."""


class SpecError(JupyterExecError, ValueError):
    """The user's run spec (limits, mounts, env vars, options) is invalid."""


class PolicyError(SpecError):
    """The run asks for more than the administrator's policy allows, or the policy file
    cannot be read (then every run is refused). ``source`` is the policy file."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class TransferError(JupyterExecError):
    """A value cannot cross the sandbox boundary as data."""


class BackendUnavailableError(JupyterExecError):
    """The backend cannot run on this machine; ``fix`` says what to do about it."""

    def __init__(self, backend: str, reason: str, fix: str = "") -> None:
        self.backend, self.reason, self.fix = backend, reason, fix
        super().__init__(f"{backend} backend unavailable: {reason}" + (f" — {fix}" if fix else ""))


class TaskError(JupyterExecError):
    """A run did not succeed. ``status`` is the run's final status in the store."""

    status = "failed"

    def __init__(self, message: str, *, run_id: int | None = None, exit_code: int | None = None,
                 log_path: str | None = None) -> None:
        super().__init__(message)
        self.run_id, self.exit_code, self.log_path = run_id, exit_code, log_path

    def _render_traceback_(self) -> list[str]:
        """One line in IPython: our own frames are no help to the user."""
        where = f"  (run {self.run_id}; full log: %jx logs {self.run_id})" if self.run_id else ""
        return [f"{type(self).__name__}: {self}{where}"]


class TaskCancelledError(TaskError):
    status = "cancelled"


class TaskTimeoutError(TaskError):
    status = "timeout"


class ResourceLimitError(TaskError):
    """A limit was hit; ``status`` is ``oom`` for memory, ``failed`` for the others."""

    def __init__(self, message: str, *, status: str = "oom", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.status = status


class NodeFailedError(TaskError):
    """The process, container or node running the cell died for reasons outside the cell."""


class RemoteError(TaskError):
    """The cell raised. Shows the sandbox's traceback, not ours, in IPython."""

    def __init__(self, type_name: str, message: str, traceback: str, **kwargs) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name, **kwargs)
        self.type_name, self.remote_message, self.remote_traceback = type_name, message, traceback

    def _render_traceback_(self) -> list[str]:
        return [*self.remote_traceback.rstrip("\n").splitlines(),
                f"(raised inside the sandbox{f', run {self.run_id}' if self.run_id else ''})"]


_remote_classes: dict[str, type[RemoteError]] = {}


def remote_error(type_name: str, message: str, traceback: str, **kwargs) -> RemoteError:
    """A RemoteError that is also the built-in exception it reports, when there is one.

    So ``except PermissionError`` in the notebook catches a PermissionError raised in the
    sandbox. Only built-in exception classes are used: nothing from the sandbox names a
    class to import.
    """
    builtin = getattr(builtins, type_name, None)
    if not (isinstance(builtin, type) and issubclass(builtin, Exception)) or issubclass(
            builtin, (KeyboardInterrupt, SystemExit)):
        return RemoteError(type_name, message, traceback, **kwargs)
    cls = _remote_classes.get(type_name)
    if cls is None:
        cls = type(type_name, (RemoteError, builtin), {"__module__": "jupyter_exec.remote"})
        _remote_classes[type_name] = cls
    error = cls.__new__(cls)
    RemoteError.__init__(error, type_name, message, traceback, **kwargs)
    return error
