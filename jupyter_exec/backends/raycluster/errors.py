"""Ray's exceptions as ours, for a cell and for each ``map`` item: the cell's own error,
cancelled, timed out, out of memory, or a fault outside the cell — its worker exited or died,
its node died, or the whole cluster went away — named in one line with what to do."""

from __future__ import annotations

import re
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

_NODE = re.compile(r"Node IP: (?P<ip>[^,\s]+), node ID: (?P<id>[0-9a-f]+)")
_RETRY_FIX = "--retries N runs it again on another node"


def task_error(
    error: Exception,
    run_id: int | None,
    timeout: float | None = None,
    *,
    timed_out: bool = False,
    cancelled: bool = False,
    lost: str | None = None,
    exited: dict[str, Any] | None = None,
    what: str = "the cell",
) -> TaskError:
    """The ``TaskError`` a Ray error stands for: ``timed_out``/``cancelled``/``lost`` say what the
    kernel did or saw (``lost``: why the cluster is gone), ``exited`` what the worker said before
    the cell ended it (its exit code, node and pid)."""
    from ray import exceptions as rx

    context: dict[str, Any] = {"run_id": run_id}
    if lost:
        return NodeFailedError(f"{lost} while {what} ran on it; the next run connects afresh", **context)
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
    if exited is not None:
        code = exited.get("code")
        return NodeFailedError(
            f"{what} ended its Ray worker (os._exit({code}): exit code {code}, worker pid {exited.get('pid')} "
            f"on node {str(exited.get('node_id'))[:12]}) before reporting a result",
            exit_code=code if isinstance(code, int) else None,
            **context,
        )
    if isinstance(error, rx.WorkerCrashedError):
        return NodeFailedError(
            f"the Ray worker running {what} died before reporting a result (killed by a signal, e.g. the "
            f"system's out-of-memory killer, or crashed); its node's raylet.out and python-core-worker "
            f"logs say more; {_RETRY_FIX} if the fault was the worker's",
            **context,
        )
    if isinstance(error, rx.NodeDiedError):
        node = _NODE.search(str(error))
        where = f"node {node['id'][:12]} at {node['ip']}" if node else "its node"
        return NodeFailedError(
            f"the Ray node running {what} died ({where}): it left the cluster, was preempted, or its "
            f"raylet crashed; {_RETRY_FIX}",
            **context,
        )
    return NodeFailedError(f"the Ray worker or node running {what} failed: {type(error).__name__}: {error}", **context)
