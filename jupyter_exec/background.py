"""Runs that go on after their cell returns (``--bg``), and waiting for them (``%jx wait``).

A background run is an ordinary ``Manager.run`` on a thread of its own: recorded,
limited and cancellable (``Manager.cancel``) like any other. When it succeeds its
``--out`` values are handed to ``bind`` (the magic binds them in the namespace).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from .errors import JupyterExecError
from .events import EventCallback, RunEvent, RunResult
from .manager import Manager
from .runner.protocol import OutputSink
from .spec import RunSpec

__all__ = ["BackgroundRun", "BackgroundRuns"]


class BackgroundRun:
    """A handle on one background run: ``wait()`` for its result, ``done()`` to ask."""

    def __init__(self, run_id: int, future: Future[RunResult]) -> None:
        self.run_id, self.future = run_id, future

    def done(self) -> bool:
        return self.future.done()

    def wait(self, timeout: float | None = None) -> RunResult:
        """The result (or the run's error, raised); ``TimeoutError`` if still running after ``timeout``."""
        try:
            return self.future.result(timeout)
        except TimeoutError:
            raise TimeoutError(
                f"run {self.run_id} is still running; %jx wait {self.run_id} again, or %jx cancel {self.run_id}"
            ) from None

    def __repr__(self) -> str:
        state = "finished" if self.done() else "running in the background"
        return f"<run {self.run_id} {state}: %jx wait {self.run_id} for its result>"


class BackgroundRuns:
    """The background runs of one kernel, by run id."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._runs: dict[int, BackgroundRun] = {}

    def start(
        self,
        code: str,
        spec: RunSpec,
        *,
        namespace: Mapping[str, Any] | None = None,
        sink: OutputSink | None = None,
        on_event: EventCallback | None = None,
        bind: Callable[[RunResult], None] | None = None,
        runner: Callable[..., RunResult] | None = None,
    ) -> BackgroundRun:
        """Start the run on its own thread; return once it is recorded (it has an id).
        ``runner`` replaces ``manager.run`` (``--trace`` records a node around it)."""
        future: Future[RunResult] = Future()
        created: list[int] = []
        recorded = threading.Event()

        def events(event: RunEvent) -> None:
            try:
                if on_event is not None:
                    on_event(event)
            finally:  # after the caller has heard it: what it shows of the run comes before the cell returns
                if event["kind"] == "created":
                    created.append(event["run_id"])
                    recorded.set()

        def work() -> None:
            try:
                result = (runner or self.manager.run)(code, spec, namespace=namespace, sink=sink, on_event=events)
                if bind is not None:
                    bind(result)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
            finally:
                recorded.set()

        # In the starting cell's context: what the run shows (ipykernel's parent header is a
        # context variable) lands in that cell, not in whichever cell runs when it prints.
        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True, name="jx-background").start()
        recorded.wait()
        if not created:  # refused before it was recorded (bad spec, no backend)
            future.result()
        run = BackgroundRun(created[0], future)
        self._runs[run.run_id] = run
        return run

    def get(self, run_id: int) -> BackgroundRun:
        run = self._runs.get(run_id)
        if run is None:
            raise JupyterExecError(f"run {run_id} was not started with --bg in this kernel")
        return run
