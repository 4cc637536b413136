"""One cell on Ray, kernel side: waiting for its task, taking its output, how it ended;
and the one thread that enforces every run's ``--timeout``."""

from __future__ import annotations

import heapq
import json
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from jupyter_exec.backends.base import ExecutorBackend, Outcome, Submission, TaskHandle
from jupyter_exec.backends.runs import TrackedRun
from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.protocol import Envelope
from jupyter_exec.runner.sanitize import sanitize_bundle
from jupyter_exec.status import Status

from .connection import Connection
from .errors import task_error

__all__ = ["Deadlines", "RayRun", "StillRunning", "deadlines"]

_OUTPUT_GRACE = 10.0
_EXIT_NOTICE_GRACE = 2.0  # how long a worker that died gets for its exit notice to arrive


class StillRunning(Exception):
    """The task did not end within the wait asked for (not an outcome)."""


class Deadlines:
    """One thread that force-cancels every run that outlives its ``--timeout``.

    The thread waiting for a run can then block in a plain ``ray.get``: Ray's timed get
    costs a trivial cell about 0.1 ms more, a twentieth of the whole task. Runs are held
    weakly and ended ones are dropped from the top as new ones come, so a loop of many
    short cells keeps no memory alive. The thread is woken only for a deadline earlier than
    the next look it has planned (it looks at least every ``_IDLE_LOOK`` seconds): a cell
    under the default ten-minute timeout wakes no thread, which on a busy machine would
    cost the cell a turn on a core.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, weakref.ref[RayRun]]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next_look = 0.0  # when the thread looks next, unless woken

    def add(self, when: float, run: RayRun) -> None:
        with self._changed:
            self._drop_ended()
            heapq.heappush(self._due, (when, run.submission.run_id, weakref.ref(run)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="jx-ray-deadlines")
                self._thread.start()
            elif when < self._next_look:
                self._changed.notify()

    def _drop_ended(self) -> None:
        while self._due and _ended(self._due[0][2]()):
            heapq.heappop(self._due)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._drop_ended()
                now = time.monotonic()
                if not self._due or self._due[0][0] > now:
                    self._next_look = min(self._due[0][0] if self._due else math.inf, now + _IDLE_LOOK)
                    self._changed.wait(self._next_look - now)
                    continue
                run = heapq.heappop(self._due)[2]()
            if run is not None:
                run.expire()  # does nothing if the run has ended meanwhile


_IDLE_LOOK = 30.0


def _ended(run: RayRun | None) -> bool:
    return run is None or run.handle.done()


deadlines = Deadlines()


class RayRun(TrackedRun):
    """One cell on Ray: waits for the task, takes its output, maps how it ended. Its handle is
    finished by whoever waits for it (``resolve``): Ray needs no thread per run."""

    def __init__(
        self, submission: Submission, backend: ExecutorBackend, conn: Connection, node_id: str | None, ref: Any
    ) -> None:
        self.submission, self.backend, self.conn, self.ref = submission, backend, conn, ref
        self.handle = TaskHandle(submission, backend)
        self.cancel_requested = False
        self.timed_out = False
        self.lost: str | None = None  # why the cluster went away under the run
        self.exited: dict[str, Any] | None = None  # the cell ended its worker (os._exit): code, node, pid
        self.began = time.monotonic()
        self.wants_output = False  # ended with chunks not yet delivered: the pump pulls for them
        self.received = 0
        self._output = threading.Condition()
        self._resolving = threading.RLock()  # cancel() resolves too, maybe from the interrupted thread
        self.details: dict[str, Any] = {"address": conn.address, "node_affinity": node_id}

    def deliver(self, seq: int, items: list) -> None:
        sink = self.submission.sink
        with self._output:
            for kind, payload in items:
                if kind == "exit":
                    self.exited = payload
                elif kind == "display":
                    sink.display(sanitize_bundle(payload, self.submission.spec.trust))
                else:
                    sink.output(kind, payload)
            self.received = max(self.received, seq)
            self._output.notify_all()

    def cancel(self) -> None:
        import ray

        self.cancel_requested = True
        ray.cancel(self.ref, force=True)

    def settle(self, timeout: float) -> bool:
        self.resolve(timeout)
        return self.handle.done()

    def expire(self) -> None:
        """The run's ``--timeout`` passed: force-cancel it (its waiter then reports the timeout)."""
        if not self.handle.done():
            self.timed_out = True
            self._stop()

    def lose(self, why: str) -> None:
        """The cluster went away: stop waiting for it (its waiter then reports ``why``)."""
        if not self.handle.done():
            self.lost = why
            self._stop()

    def _stop(self) -> None:
        import ray

        try:
            ray.cancel(self.ref, force=True)
        except Exception:  # Ray gone (kernel exiting): the waiter hears of it from ray.get
            pass

    def resolve(self, timeout: float | None) -> None:
        """Finish the handle if the task ends within ``timeout`` (None: however long it takes)."""
        with self._resolving:
            if self.handle.done():
                return
            try:
                outcome = self._outcome(timeout)
            except StillRunning:
                return
            except Exception as error:  # never leave a handle unfinished
                outcome = Outcome(Status.FAILED, error=NodeFailedError(f"lost the Ray task: {error!r}"))
            self.backend.forget(self.submission.run_id)
            outcome.details = {**self.details, **outcome.details}
            self.handle.finish(outcome)

    def _await_output(self, done: Callable[[], bool], seconds: float) -> None:
        """Pull the relay until ``done()`` (the run's chunks all came) or ``seconds`` pass."""
        self.wants_output = True
        self.conn.output.wake()
        with self._output:
            self._output.wait_for(done, seconds)

    def _await_exit_notice(self) -> None:
        """A worker that the cell ended with ``os._exit`` sent its code and last output first."""
        self._await_output(lambda: self.exited is not None, _EXIT_NOTICE_GRACE)

    def _outcome(self, wait: float | None) -> Outcome:
        import ray
        from ray.exceptions import GetTimeoutError, NodeDiedError, RayError, WorkerCrashedError

        until = None if wait is None else time.monotonic() + wait
        while True:
            try:
                # No timeout unless the caller asked for one: --timeout is ``_deadlines``' job.
                reply = (
                    ray.get(self.ref)
                    if until is None
                    else (ray.get(self.ref, timeout=max(0.0, until - time.monotonic())))
                )
                result = json.loads(reply)
                break
            except GetTimeoutError:
                if until is not None and time.monotonic() >= until:
                    raise StillRunning from None
                # ray.get can time out at once after an interrupted get (seen with Ray 2.60): wait again
            except RayError as ray_error:
                if isinstance(ray_error, (NodeDiedError, WorkerCrashedError)) and not (
                    self.lost or self.cancel_requested
                ):
                    self.lost = self.conn.gone()  # the head may have gone with the node
                    if self.lost is None and isinstance(ray_error, WorkerCrashedError):
                        self._await_exit_notice()
                error = task_error(
                    ray_error,
                    self.submission.run_id,
                    self.submission.spec.limits.timeout,
                    timed_out=self.timed_out,
                    cancelled=self.cancel_requested,
                    lost=self.lost,
                    exited=self.exited,
                )
                details: dict[str, Any] = {k: self.exited[k] for k in ("node_id", "pid")} if self.exited else {}
                return Outcome(error.status, error=error, exit_code=error.exit_code, details=details)
        began = result.get("began")
        if isinstance(began, float) and self.handle.started <= began <= time.time():  # another node's clock may differ
            self.handle.mark("in_worker", began)
        if self.received < result["chunks"]:
            self._await_output(lambda: self.received >= result["chunks"], _OUTPUT_GRACE)
        raw = result["envelope"]
        envelope = Envelope(
            value=raw.get("value"),
            outputs=raw.get("outputs", {}),
            error=raw.get("error"),
            untransferable=raw.get("untransferable"),
            usage=raw.get("usage", {}),
        )
        outcome = Outcome(
            Status.SUCCEEDED,
            envelope=envelope,
            cpu_seconds=envelope.usage.get("cpu_seconds"),
            details={k: result[k] for k in ("node_id", "task_id", "gpu_ids", "pid", "cuda_visible_devices")},
        )
        if envelope.error and (remote := envelope.remote_error(run_id=self.submission.run_id)) is not None:
            outcome.status, outcome.error = remote.status, remote
        return outcome
