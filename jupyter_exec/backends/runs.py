"""What the backends share to follow their runs, beyond the contract in ``base``.

- ``RunRegistry``: the runs a backend has going, by run id, and what ``cancel``, ``forget``
  and ``shutdown`` do with them, the same for every backend: ``shutdown`` cancels every
  run still going and waits for them to end, at most ``SHUTDOWN_WAIT`` seconds in all, so
  each is recorded ``cancelled`` rather than lost with the kernel.
- ``TrackedRun``: a run such a registry holds (the backend says how to stop and await it).
- ``KillableRun``: a run in a process or container the backend can kill, read through file
  descriptors by a pump thread of its own (the process and container backends).
- ``MapProgress``: the progress line every map shows.
"""

from __future__ import annotations

import abc
import codecs
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from jupyter_exec.errors import NodeFailedError
from jupyter_exec.runner.protocol import ProtocolReader
from jupyter_exec.status import Status

from .base import Outcome, Submission, TaskHandle

__all__ = ["KILL_GRACE", "SHUTDOWN_WAIT", "KillableRun", "MapProgress", "RunRegistry", "TrackedRun"]

KILL_GRACE = 2.0  # seconds a killed run's descriptors may stay open before we stop reading
SHUTDOWN_WAIT = 10.0  # seconds a backend's shutdown waits, in all, for the runs it cancelled


class TrackedRun(abc.ABC):
    """A run a backend follows in its ``RunRegistry``; ``handle`` is finished exactly once."""

    handle: TaskHandle

    @abc.abstractmethod
    def cancel(self) -> None:
        """Ask the run to stop, at once; its handle is then finished as cancelled."""

    def settle(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the run to end; whether it has."""
        return self.handle.wait(timeout)


Run = TypeVar("Run", bound=TrackedRun)


class RunRegistry(Generic[Run]):
    """The runs a backend has going, by run id (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.handle.run_id] = run
        return run

    def get(self, run_id: int) -> Run | None:
        return self._runs.get(run_id)

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def cancel(self, run_id: int) -> bool:
        """Ask run ``run_id`` to stop; True if it was still going."""
        run = self._runs.get(run_id)
        if run is None or run.handle.done():
            return False
        run.cancel()
        return True

    def shutdown(self, wait: float = SHUTDOWN_WAIT) -> None:
        """Cancel every run still going, then wait for them to end, at most ``wait`` seconds in all."""
        with self._lock:
            going = [run for run in self._runs.values() if not run.handle.done()]
        for run in going:
            run.cancel()
        deadline = time.monotonic() + wait
        for run in going:
            run.settle(max(0.0, deadline - time.monotonic()))


class KillableRun(TrackedRun):
    """A run a backend started in a process or container it can kill, read through
    file descriptors (stdout, stderr, the protocol channel) by its pump thread.

    ``pump`` is that thread's body: stream until the run's processes let go, work out
    the outcome, release what the run held, and finish the handle whatever happens.
    """

    submission: Submission
    reader: ProtocolReader
    cancel_requested: bool = False
    timed_out: bool = False

    @abc.abstractmethod
    def kill(self) -> None:
        """Kill everything the run started, at once."""

    @abc.abstractmethod
    def stream_until_exit(self) -> Outcome:
        """Stream the run's output until it ends; how it ended."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give back what the run held (its process or container); never raises."""

    def after(self) -> None:
        """Called once the handle is finished (e.g. to refill a pool off the run's path)."""

    def cancel(self) -> None:
        self.cancel_requested = True
        self.kill()

    def start_pump(self) -> None:
        threading.Thread(target=self.pump, daemon=True, name=f"jx-run-{self.submission.run_id}").start()

    def pump(self) -> None:
        try:
            outcome = self.stream_until_exit()
        except BaseException as error:  # never leave a handle unfinished
            self.kill()
            outcome = Outcome(Status.FAILED, error=NodeFailedError(f"lost the run: {error!r}"))
        finally:
            self.release()
        self.handle.finish(outcome)
        self.after()

    def over(self, streams: dict[int, str]) -> bool:
        """Whether the run is over though ``streams`` (those still open) are: the supervisor's last
        word came, and the cell's output is complete, so nothing more can come."""
        return self.reader.exit_status is not None and "stdout" not in streams.values() and len(streams) == 1

    def stream(self, fds: dict[int, str], tick: Callable[[float], None] = lambda elapsed: None) -> None:
        """Read ``fds`` (named stdout, stderr or protocol) until every holder lets go.

        Output is decoded incrementally, so a character split across reads stays whole. Once
        stdout and stderr are closed and the supervisor has reported the cell's exit (its
        last message), the run is over without waiting for the protocol channel to close. The
        wall-clock limit is enforced here: past it the run is killed and ``timed_out`` set.
        After a kill, something outside our reach may hold a descriptor open; it gets
        ``KILL_GRACE`` seconds, then we stop waiting. ``tick`` is called each pass.
        """
        timeout = self.submission.spec.limits.timeout
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        killed_at: float | None = None
        streams = dict(fds)
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
        sink = self.submission.sink
        while streams:
            wait = 0.1 if deadline is None or killed_at is not None else max(0.0, min(0.1, deadline - time.monotonic()))
            readable, _, _ = select.select(list(streams), [], [], wait)
            for fd in readable:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                name = streams[fd]
                if not chunk:
                    del streams[fd]
                elif name == "protocol":
                    self.reader.feed(chunk)
                elif text := decoders[name].decode(chunk):
                    sink.output(name, text)
            now = time.monotonic()
            tick(now - started)
            if killed_at is None and deadline is not None and now >= deadline:
                self.timed_out = True
                self.kill()
            if killed_at is None and (self.timed_out or self.cancel_requested):
                killed_at = now
            if killed_at is not None and now - killed_at > KILL_GRACE:
                break
            if self.over(streams):
                break
        for name, decoder in decoders.items():
            if tail := decoder.decode(b"", final=True):
                sink.output(name, tail)


class MapProgress:
    """The progress line every map shows (``say``: where it goes; None: nowhere), at most five
    times a second and once more when the last item is in."""

    def __init__(self, total: int, say: Callable[[str], None] | None) -> None:
        self.total, self.say, self.done, self.failed, self._shown = total, say, 0, 0, 0.0

    def advance(self, items: int, failed: int = 0) -> None:
        """``items`` more are in, ``failed`` of them with an error."""
        self.done += items
        self.failed += failed
        if self.say and (time.monotonic() - self._shown > 0.2 or self.done == self.total):
            self._shown = time.monotonic()
            end = "\n" if self.done == self.total else ""
            failures = f", {self.failed} failed" if self.failed else ""
            self.say(f"\r[jupyter-exec] map: {self.done}/{self.total} done{failures}{end}")
