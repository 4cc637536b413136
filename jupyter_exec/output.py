"""Where a run's output goes: whole into its log file, capped into the notebook.

``RunOutput`` is the sink a backend writes to. It appends every chunk to the run's log
and passes chunks on to the visible sink until ``limit`` bytes have been shown, then
shows one "truncated" line pointing at ``%jx logs N``. Nothing is held in memory, so a
cell that prints 50 MB costs the kernel nothing but disk; a disk that fills cuts the log,
never the run or its record.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import describe_error
from .runner.protocol import OutputSink
from .store.space import DISK_FULL
from .units import format_bytes, format_elapsed

__all__ = ["ConsoleSink", "InCell", "RunOutput"]


class InCell:
    """Calls made as if from the cell that made this object.

    ipykernel keeps the cell an output belongs to (its parent header) in a context variable.
    A backend's reader thread has none of its own, so what it shows would land in whichever
    cell runs at that moment: a background run's lines and pictures in a later cell.
    """

    def __init__(self) -> None:
        self._context = contextvars.copy_context()

    def call(self, function: Callable[..., object], *args: object) -> None:
        self._context.copy().run(function, *args)  # a copy: a context is entered by one thread at a time


class ConsoleSink:
    """Writes to the streams current when it was made (the cell's, inside a kernel).

    Displays go through IPython's display machinery when a shell is running, else their
    text form is printed.
    """

    def __init__(self) -> None:
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr, "info": sys.stdout}  # info: never red
        self.cell = InCell()

    def output(self, stream: str, text: str) -> None:
        self.cell.call(self._write, stream, text)

    def _write(self, stream: str, text: str) -> None:
        target = self.streams[stream]
        target.write(text)
        target.flush()

    def display(self, bundle: dict[str, str]) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import publish_display_data
        except ImportError:
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            self.cell.call(publish_display_data, bundle)
        else:
            self.output("stdout", bundle.get("text/plain", "") + "\n")


class RunOutput:
    """Tee to the log file (everything) and the visible sink (up to ``limit`` bytes).

    The log file is made on the first output; ``end`` writes how the run ended as its last
    lines, so every run's log says how it ended, a silent one's too. When the disk
    holding it is full (or the quota spent), the log stops: its last ``_ROOM`` bytes give way
    to a line saying it was truncated and why (room, too, for the run's record), ``log_cut``
    says so for the run's details, and the output goes on showing in the notebook.
    """

    def __init__(self, run_id: int, log_path: Path, shown: OutputSink, limit: int) -> None:
        self.run_id, self.shown, self.limit = run_id, shown, limit
        self.log_path = log_path
        self.log: int | None = None  # file descriptor: unbuffered, so a full disk is seen at once
        self.logged = 0
        self.ended = False
        self._line_open = False  # the last chunk logged did not end its line
        self.log_cut: str | None = None
        self.shown_bytes = 0
        self.truncated = False
        self.first_output: float | None = None  # epoch seconds: the run's first chunk (its timeline)
        self._lock = threading.Lock()

    def output(self, stream: str, text: str) -> None:
        with self._lock:
            if self.first_output is None and stream != "info":
                self.first_output = time.time()
            notice = self._log(text) if self.log_cut is None else None
            if self.truncated:
                text = ""
            else:
                size = len(text.encode("utf-8", "replace"))
                if self.shown_bytes + size > self.limit:
                    room = max(self.limit - self.shown_bytes, 0)
                    head = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                    self.truncated = True
                    text = (
                        head + f"\n[jupyter-exec] output truncated at {self.limit:,} bytes; "
                        f"full log: %jx logs {self.run_id}\n"
                    )
                else:
                    self.shown_bytes += size
        if notice:
            self.shown.output("stderr", notice)
        if text:
            self.shown.output(stream, text)

    def _log(self, text: str) -> str | None:
        """Append ``text`` to the log; the notice to show if the disk just turned out to be full."""
        data = memoryview(text.encode("utf-8", "replace"))
        try:
            if self.log is None:
                self.log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            while data:  # readers (the side panel) tail the file while the run goes on
                written = os.write(self.log, data)
                self.logged += written
                data = data[written:]
            if text:
                self._line_open = not text.endswith("\n")
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            return self._cut(error)
        return None

    def _cut(self, error: OSError) -> str:
        kept = max(self.logged - _ROOM, 0)
        self.log_cut = (
            f"log truncated at {format_bytes(kept)}: {os.strerror(error.errno or 0).lower()} "
            f"on the disk holding {self.log_path.parent}"
        )
        if self.log is not None:
            try:
                os.ftruncate(self.log, kept)
                os.pwrite(self.log, f"\n[jupyter-exec] {self.log_cut}\n".encode(), kept)
            except OSError:
                pass  # the record of the run still says so
        return f"\n[jupyter-exec] run {self.run_id}: {self.log_cut}; its output still shows here\n"

    def note(self, text: str) -> None:
        """Into the log only, never shown: what the backend's machinery said during the run
        (Ray's own log lines), for ``%jx logs N``."""
        with self._lock:
            if self.ended:  # the run is over and its log complete
                return
            notice = self._log(text) if self.log_cut is None else None
        if notice:
            self.shown.output("stderr", notice)

    def display(self, bundle: dict[str, str]) -> None:
        self.shown.display(bundle)

    def end(self, status: str, seconds: float | None, peak_memory: int | None, error: BaseException | None) -> None:
        """The log's last lines, how the run ended: its status, how long it took and its peak
        memory, then its error as the cell shows it (the sandbox's traceback, a hint); first a
        line saying so if the run printed nothing. Then the log is closed."""
        lines = [f"[jupyter-exec] run {self.run_id} printed nothing"] if not self.logged else []
        took = f" after {format_elapsed(seconds)}" if seconds is not None else ""
        peak = f" (peak memory {format_bytes(peak_memory)})" if peak_memory else ""
        lines.append(f"[jupyter-exec] run {self.run_id} {status}{took}{peak}")
        if error is not None:
            render = getattr(error, "_render_traceback_", None)
            lines += render() if callable(render) else [describe_error(error) or ""]
        with self._lock:
            if not self.ended and self.log_cut is None:
                self._log(("\n" if self._line_open else "") + "\n".join(lines) + "\n")
            self.ended = True
        self.close()

    def close(self) -> None:
        with self._lock:
            if self.log is not None:
                os.close(self.log)
                self.log = None


#: Bytes a full log gives back: the truncation line and the run's record need a little room.
_ROOM = 64 * 1024
