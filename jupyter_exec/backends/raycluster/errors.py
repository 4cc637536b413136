"""Ray's exceptions as ours, for a cell and for each ``map`` item: the cell's own error,
cancelled, timed out, out of memory, or the node's fault."""

from __future__ import annotations

from typing import Any

from jupyter_exec.errors import (
    NodeFailedError,
    ResourceLimitError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    remote_error,
)
from jupyter_exec.status import Status

__all__ = ["task_error"]


def task_error(
    error: Exception,
    run_id: int | None,
    timeout: float | None = None,
    *,
    timed_out: bool = False,
    cancelled: bool = False,
    what: str = "the cell",
) -> TaskError:
    """The ``TaskError`` a Ray error stands for (``timed_out``/``cancelled``: what the kernel did)."""
    from ray import exceptions as rx

    context: dict[str, Any] = {"run_id": run_id}
    if timed_out and not cancelled:
        return TaskTimeoutError(f"timed out after {timeout:g} s (--timeout); the Ray task was cancelled", **context)
    if cancelled or isinstance(error, rx.TaskCancelledError):
        return TaskCancelledError(f"run {run_id} was cancelled (Ray task force-cancelled)", **context)
    if isinstance(error, rx.OutOfMemoryError):
        return ResourceLimitError(
            f"Ray's memory monitor killed the task (its node ran low on memory): {error}", status=Status.OOM, **context
        )
    if isinstance(error, rx.RuntimeEnvSetupError):
        return TaskError(f"Ray could not set up the runtime env (--pip, --working-dir, --env): {error}", **context)
    if isinstance(error, rx.RayTaskError):
        cause = error.cause if isinstance(error.cause, BaseException) else error
        return remote_error(type(cause).__name__, str(cause), error.traceback_str, **context)
    return NodeFailedError(f"the Ray worker or node running {what} failed: {type(error).__name__}: {error}", **context)
