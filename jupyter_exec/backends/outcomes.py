"""How a run ended, from what every backend can observe: one mapping for all of them.

A backend gathers the facts (the protocol reader, the wait status of the cell's process,
whether it cancelled, timed out or saw the kernel's OOM killer, the resources it measured)
and ``classify`` turns them into the ``Outcome`` and the ``TaskError`` the user sees, so
that a timeout or an out-of-memory reads the same in a process and in a container.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from jupyter_exec.errors import NodeFailedError, ResourceLimitError, TaskCancelledError, TaskError, TaskTimeoutError
from jupyter_exec.limits import LIMITS
from jupyter_exec.runner.protocol import ProtocolReader
from jupyter_exec.spec import Limits
from jupyter_exec.status import Status

from .base import Outcome

__all__ = ["classify"]


def classify(
    *,
    run_id: int,
    limits: Limits,
    reader: ProtocolReader,
    wait_status: int,
    cancelled: bool,
    timed_out: bool,
    oom_killed: bool,
    peak_memory: int | None,
    cpu_seconds: float | None,
    what: str = "the sandbox process",
) -> Outcome:
    """The run's ``Outcome``; ``wait_status`` is as from ``os.wait`` (an init's report wins)."""
    envelope = reader.envelope
    if reader.exit_status is not None:
        wait_status = reader.exit_status  # the cell's own process, not its init's
    exit_code = os.waitstatus_to_exitcode(wait_status)
    term_signal = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
    outcome = Outcome(
        Status.SUCCEEDED, envelope=envelope, exit_code=exit_code, peak_memory=peak_memory, cpu_seconds=cpu_seconds
    )
    context: dict[str, Any] = {"run_id": run_id, "exit_code": exit_code}
    error: TaskError | None = None
    if cancelled:
        error = TaskCancelledError(f"run {run_id} was cancelled", **context)
    elif timed_out:
        error = TaskTimeoutError(
            f"timed out after {limits.timeout:g} s ({LIMITS['timeout'].flag}); the run was killed", **context
        )
    elif oom_killed or (envelope and envelope.error and envelope.error["type"] == "MemoryError"):
        memory = LIMITS["memory"]
        asked = memory.show(limits.memory) if limits.memory else "(unset)"
        error = ResourceLimitError(f"out of memory: the run needed more than {memory.flag} {asked}", **context)
        if oom_killed and limits.memory:  # killed on reaching it, often before a sample or its own report
            outcome.peak_memory = max(outcome.peak_memory or 0, limits.memory)
    elif term_signal == signal.SIGXCPU or (
        limits.cpu_time and term_signal == signal.SIGKILL and (cpu_seconds or 0) >= limits.cpu_time
    ):
        error = TaskTimeoutError(
            f"CPU time limit of {limits.cpu_time:g} s reached ({LIMITS['cpu_time'].flag})", **context
        )
    elif envelope is None:
        how = f"signal {signal.Signals(term_signal).name}" if term_signal else f"exit code {exit_code}"
        error = NodeFailedError(f"{what} ended ({how}) before reporting a result", **context)
    elif envelope.confine_error:
        error = NodeFailedError(f"could not confine the sandbox: {envelope.confine_error}", **context)
    elif envelope.error:
        error = envelope.remote_error(**context)
    if error is not None:
        outcome.status, outcome.error = error.status, error
    outcome.details["confinement"] = envelope.confine_notes if envelope else []
    return outcome
