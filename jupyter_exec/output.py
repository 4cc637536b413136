"""Where a run's output goes: whole into its log file, capped into the notebook.

``RunOutput`` is the sink a backend writes to. It appends every chunk to the run's log
and passes chunks on to the visible sink until ``limit`` bytes have been shown, then
shows one "truncated" line pointing at ``%jx logs N``. Nothing is held in memory, so a
cell that prints 50 MB costs the kernel nothing but disk.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import IO

from .runner.protocol import OutputSink

__all__ = ["ConsoleSink", "RunOutput"]


class ConsoleSink:
    """Writes to the streams current when it was made (the cell's, inside a kernel).

    Displays go through IPython's display machinery when a shell is running, else their
    text form is printed.
    """

    def __init__(self) -> None:
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr}

    def output(self, stream: str, text: str) -> None:
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
            publish_display_data(bundle)
        else:
            self.output("stdout", bundle.get("text/plain", "") + "\n")


class RunOutput:
    """Tee to the log file (everything) and the visible sink (up to ``limit`` bytes).

    The log file is made on the first output, so a silent run costs no file.
    """

    def __init__(self, run_id: int, log_path: Path, shown: OutputSink, limit: int) -> None:
        self.run_id, self.shown, self.limit = run_id, shown, limit
        self.log_path = log_path
        self.log: IO[str] | None = None
        self.shown_bytes = 0
        self.truncated = False
        self._lock = threading.Lock()

    def output(self, stream: str, text: str) -> None:
        with self._lock:
            if self.log is None:
                self.log = open(self.log_path, "w", encoding="utf-8", errors="replace")
            self.log.write(text)
            self.log.flush()  # readers (the side panel) tail the file while the run goes on
            if self.truncated:
                return
            size = len(text.encode("utf-8", "replace"))
            if self.shown_bytes + size > self.limit:
                room = max(self.limit - self.shown_bytes, 0)
                head = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                self.truncated = True
                self.shown.output(
                    stream,
                    head + f"\n[jupyter-exec] output truncated at {self.limit:,} bytes; "
                    f"full log: %jx logs {self.run_id}\n",
                )
                return
            self.shown_bytes += size
        self.shown.output(stream, text)

    def display(self, bundle: dict[str, str]) -> None:
        self.shown.display(bundle)

    def close(self) -> None:
        with self._lock:
            if self.log is not None:
                self.log.close()
