"""Every error jupyter-exec raises, in one tree.

::

    JupyterExecError                    root: catch this to catch all of ours
    ├── SpecError (ValueError)          bad limits, units, mounts, env vars: the user's input
    │   └── PolicyError                 refused by the administrator's policy (or it is unreadable)
    ├── TransferError                   a value cannot cross the sandbox boundary safely
    ├── EnvBuildError                   a runtime env could not be built; carries its log
    ├── ApiError                        a side-panel REST request that cannot be answered; carries the HTTP status
    ├── StoreError                      the run store cannot be used (locked, unreadable, disk full); carries its path
    ├── MapError                        items of a map failed; carries every result and each item's error
    └── TaskError                       the run did not succeed
        ├── RemoteError                 the cell raised; keeps type name, message, remote traceback;
        │                               also the builtin it reports, or its nearest builtin base
        ├── TaskCancelledError          cancelled (interrupt, %jx cancel)
        ├── TaskTimeoutError            wall-clock or CPU-time limit reached
        ├── ResourceLimitError          out of memory, process or file-size limit hit
        └── NodeFailedError             the target died under the run (not the cell's fault)
    BackendUnavailableError             the backend cannot run here; says how to fix it
    MissingExtraError (ImportError)     an optional part (a pip extra) is not installed; names the pip install

Errors carry data (run id, status, exit code, log path) so callers need not parse
messages. Lower-level errors are mapped at each boundary with ``raise ... from``.
``status_of`` and ``describe_error`` say how any exception ends a run in the store.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

from .status import Status

__all__ = [
    "ApiError",
    "BackendUnavailableError",
    "EnvBuildError",
    "JupyterExecError",
    "MapError",
    "MissingExtraError",
    "NodeFailedError",
    "PolicyError",
    "RemoteError",
    "ResourceLimitError",
    "SpecError",
    "StoreError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "TransferError",
    "describe_error",
    "remote_error",
    "status_of",
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


class EnvBuildError(JupyterExecError):
    """A runtime environment could not be built. Carries the log's tail and where the log is."""

    def __init__(self, message: str, log_path: Path, log_tail: str) -> None:
        super().__init__(f"{message}\n--- last lines of {log_path} ---\n{log_tail}")
        self.log_path, self.log_tail = log_path, log_tail

    def _render_traceback_(self) -> list[str]:
        return [f"EnvBuildError: {self}"]


class ApiError(JupyterExecError):
    """A side-panel request that cannot be answered as asked; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StoreError(JupyterExecError):
    """The run store cannot be used as asked: locked by another process, unreadable, made by a
    newer jupyter-exec, or no room left on its disk. ``path`` is the file or directory at fault;
    the message ends with the fix. Shown as one line: our own frames are no help."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path

    def _render_traceback_(self) -> list[str]:
        return [f"StoreError: {self}"]


class MapError(JupyterExecError):
    """Items of a ``jupyter_exec.map`` failed. Raised once every item has run: ``results``
    holds all items' results in order (None where one failed) and ``errors`` the error of
    each failed item by its index, so one bad item never costs the others' work."""

    def __init__(self, results: list[Any], errors: dict[int, BaseException], run_id: int | None = None) -> None:
        first = min(errors)
        detail = describe_error(errors[first])
        super().__init__(f"{len(errors)} of {len(results)} items failed; the first, item {first}: {detail}")
        self.results, self.errors, self.run_id = results, errors, run_id

    def _render_traceback_(self) -> list[str]:
        """The count, then the first failed item's own traceback."""
        first = self.errors[min(self.errors)]
        detail = getattr(first, "_render_traceback_", lambda: [f"{type(first).__name__}: {first}"])()
        more = f" (map run {self.run_id}: .results and .errors hold every item)" if self.run_id else ""
        first_index = min(self.errors)
        return [
            f"MapError: {len(self.errors)} of {len(self.results)} items failed{more}; the first, item {first_index}:",
            *detail,
        ]


class BackendUnavailableError(JupyterExecError):
    """The backend cannot run on this machine; ``fix`` says what to do about it."""

    def __init__(self, backend: str, reason: str, fix: str = "") -> None:
        self.backend, self.reason, self.fix = backend, reason, fix
        super().__init__(f"{backend} backend unavailable: {reason}" + (f" — {fix}" if fix else ""))


class MissingExtraError(JupyterExecError, ImportError):
    """An optional part of jupyter-exec is not installed; ``extra`` is the pip extra that adds it."""

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra

    def _render_traceback_(self) -> list[str]:
        """One line in IPython: the message already says what to install."""
        return [f"{type(self).__name__}: {self}"]


class TaskError(JupyterExecError):
    """A run did not succeed. ``status`` is the run's final status in the store."""

    status: Status = Status.FAILED

    def __init__(
        self, message: str, *, run_id: int | None = None, exit_code: int | None = None, log_path: str | None = None
    ) -> None:
        super().__init__(message)
        self.run_id, self.exit_code, self.log_path = run_id, exit_code, log_path

    def _render_traceback_(self) -> list[str]:
        """One line in IPython: our own frames are no help to the user."""
        where = f"  (run {self.run_id}; full log: %jx logs {self.run_id})" if self.run_id else ""
        return [f"{type(self).__name__}: {self}{where}"]


class TaskCancelledError(TaskError):
    status = Status.CANCELLED


class TaskTimeoutError(TaskError):
    status = Status.TIMEOUT


class ResourceLimitError(TaskError):
    """A limit was hit; ``status`` is ``oom`` for memory, ``failed`` for the others."""

    def __init__(self, message: str, *, status: Status = Status.OOM, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status = status


class NodeFailedError(TaskError):
    """The process, container or node running the cell died for reasons outside the cell.
    ``results``: for a fan-out (``jupyter_exec.map``), what every item that finished returned,
    None for the others; None for a single run."""

    results: list[Any] | None = None


class RemoteError(TaskError):
    """The cell raised. Shows the sandbox's traceback, not ours, in IPython, and a ``hint`` when
    what it hit is one of the sandbox's walls (``walls.py``). ``causes``: the error and those
    behind it as the sandbox described them (type, errno, file name), which the hints read."""

    hint: str | None = None
    causes: list[dict[str, Any]]

    def __init__(self, type_name: str, message: str, traceback: str, **kwargs: Any) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name, **kwargs)
        self.type_name, self.remote_message, self.remote_traceback = type_name, message, traceback
        self.causes = [{"type": type_name}]

    def _render_traceback_(self) -> list[str]:
        return [
            *self.remote_traceback.rstrip("\n").splitlines(),
            f"(raised inside the sandbox{f', run {self.run_id}' if self.run_id else ''})",
            *([f"hint: {self.hint}"] if self.hint else []),
        ]


_remote_classes: dict[tuple[str, type[Exception]], type[RemoteError]] = {}


def remote_error(
    type_name: str,
    message: str,
    traceback: str,
    *,
    base: str | None = None,
    causes: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> RemoteError:
    """A RemoteError that is also the built-in exception it reports, or the nearest built-in
    ``base`` of the class it reports (the bootstrap names it: ``gaierror`` -> ``OSError``).

    So ``except PermissionError`` in the notebook catches a PermissionError raised in the
    sandbox, and ``except OSError`` a ``socket.gaierror``. Only built-in exception classes are
    used, and our ``TransferError`` (the bootstrap's own, for an ``--in`` value it cannot
    rebuild): nothing from the sandbox names a class to import. An error reported under its
    own built-in name shows as that name; any other keeps today's ``RemoteError: type: message``.
    ``causes``: the error and those behind it as the sandbox described them; an ``OSError``
    gets its ``errno``, ``strerror`` and ``filename`` from the first.
    """
    builtin = TransferError if type_name == "TransferError" else _builtin(base) or _builtin(type_name)
    cls = RemoteError if builtin is None else _remote_class(type_name, builtin)
    error = cls.__new__(cls)
    RemoteError.__init__(error, type_name, message, traceback, **kwargs)
    if isinstance(causes, list) and causes:
        error.causes = causes
        if isinstance(error, OSError):
            _carry_os_fields(error, causes[0])
    return error


def described_error(described: dict[str, Any], **kwargs: Any) -> RemoteError:
    """The ``remote_error`` for an error as the bootstrap describes one (``describe_error``)."""
    return remote_error(
        described["type"],
        described["message"],
        described["traceback"],
        base=described.get("base"),
        causes=described.get("causes"),
        **kwargs,
    )


def _remote_class(type_name: str, builtin: type[Exception]) -> type[RemoteError]:
    """The RemoteError class that is also ``builtin``, made once per name it shows and built-in."""
    name = type_name if builtin.__name__ == type_name else RemoteError.__name__
    cls = _remote_classes.get((name, builtin))
    if cls is None:
        cls = _remote_classes[name, builtin] = _make_remote_class(name, builtin, own_name=name == type_name)
    return cls


def _make_remote_class(name: str, builtin: type[Exception], *, own_name: bool) -> type[RemoteError]:
    """A built-in that cannot be built from a message alone (``UnicodeDecodeError``,
    ``MemoryError``) gives way to its nearest base that can."""
    namespace = {"__module__": "jupyter_exec.remote", "__str__": _own_message if own_name else _message}
    for candidate in builtin.__mro__:
        if issubclass(RemoteError, candidate):
            break
        cls: type[RemoteError] = type(name, (RemoteError, candidate), namespace)
        try:
            RemoteError.__init__(cls.__new__(cls), name, "", "")
        except TypeError:
            continue
        return cls
    return RemoteError


def _builtin(name: object) -> type[Exception] | None:
    """The built-in exception class ``name`` (sandbox data: any string) names, if it is one."""
    found = getattr(builtins, name, None) if isinstance(name, str) else None
    return found if isinstance(found, type) and issubclass(found, Exception) else None


def _carry_os_fields(error: OSError, cause: object) -> None:
    """``errno``, ``strerror`` and ``filename`` as the sandbox described them, when they are plain data."""
    if not isinstance(cause, dict):
        return
    if type(cause.get("errno")) is int:
        error.errno = cause["errno"]
    for field in ("strerror", "filename"):
        if isinstance(cause.get(field), str):
            setattr(error, field, cause[field])


def _own_message(error: RemoteError) -> str:
    """The message alone, as the built-in's own ``str`` is: its class already names the type
    (IPython's ``PermissionError: ...``, never ``PermissionError: PermissionError: ...``)."""
    return error.remote_message


def _message(error: RemoteError) -> str:
    """``type: message``, as a plain ``RemoteError`` says it (not ``OSError``'s own ``[Errno n] ...``)."""
    return Exception.__str__(error)


def status_of(error: BaseException) -> Status:
    """The final status of a run that ``error`` ended: a ``TaskError`` knows its own;
    an interrupt is ``cancelled``; anything else is ``failed``."""
    if isinstance(error, TaskError):
        return error.status
    if isinstance(error, KeyboardInterrupt):
        return Status.CANCELLED
    return Status.FAILED


def describe_error(error: BaseException | None) -> str | None:
    """The one line the store keeps about ``error`` (None: no error)."""
    if error is None:
        return None
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, RemoteError):  # the type the sandbox raised (not ours), once
        return f"{error.type_name}: {error.remote_message}" if error.remote_message else error.type_name
    return f"{type(error).__name__}: {error}"
