"""Ray's own messages, kept out of the cell: they go to the kernel's log and the logs of the runs going on.

A Ray driver talks three ways, and in a kernel each would land in whatever cell is running:

- the C++ core worker writes its warnings and errors ("Failed to connect to GCS ...",
  "Failed to push error to driver ...") to file descriptor 2, which ipykernel captures and
  shows in the cell. Here fd 2 becomes a pipe whose reader passes everything on unchanged
  except Ray's own lines, known by their head (``[2026-01-01 10:00:00,000 W 123 456] ``);
- the driver's error listener prints the cluster's messages ("(raylet) A worker died ...",
  "Task ... failed. There are 1 retries remaining") through ``print_to_stdstream``;
- Ray's Python loggers (``ray`` and below) write to ``sys.stderr``, the cell's stream.

"The kernel's log" is the kernel process's standard error before ipykernel captured it (what
the Jupyter server's terminal shows), or fd 2 itself outside a kernel. Runs take part through
``attach``: each line also goes to every attached run's log, so ``%jx logs N`` shows what Ray
said while run N was going.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RayNoise", "noise"]

_RAY_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEFC] \d+ \d+\] ")
_HEAD_SIZE = 40  # a line head is shorter: a partial line this long without one is not Ray's
_HOLD_SECONDS = 0.2  # a partial line that might be Ray's waits this long for its end


class RayNoise:
    """Where Ray's messages go instead of the cell; installed once per process, on first connect."""

    def __init__(self) -> None:
        self._notes: dict[int, Callable[[str], None]] = {}
        self._installed = False
        self._lock = threading.Lock()
        self._kernel_log = 2
        self._saved_fd2: int | None = None

    def attach(self, run_id: int, note: Callable[[str], None]) -> None:
        """Ray's lines also go to this run's log (``note`` writes there without showing)."""
        self._notes[run_id] = note

    def detach(self, run_id: int) -> None:
        self._notes.pop(run_id, None)

    def say(self, text: str) -> None:
        """One message of Ray's (or ours about Ray): the kernel's log, and each attached run's log."""
        if not text.endswith("\n"):
            text += "\n"
        try:
            os.write(self._kernel_log, text.encode("utf-8", "replace"))
        except OSError:
            pass  # no kernel log to write to: the runs' logs still get it
        for note in list(self._notes.values()):
            try:
                note(text)
            except Exception:  # a run's log that cannot take it: the kernel's log has it
                pass

    def install(self) -> None:
        """Reroute all three ways (idempotent). Ray's loggers are rerouted again after every
        ``ray.init``, which sets them up afresh: call ``quiet_loggers`` then."""
        with self._lock:
            if self._installed:
                return
            self._installed = True
            copy = getattr(sys.stderr, "_original_stdstream_copy", None)  # ipykernel's copy of the real fd 2
            saved = os.dup(2)
            self._kernel_log = copy if isinstance(copy, int) else saved
            self._saved_fd2 = saved
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
            threading.Thread(target=self._sift, args=(read_end, saved), daemon=True, name="jx-ray-stderr").start()
            atexit.register(self._restore)  # before ipykernel's own clean-up, registered earlier
        _reroute_listener(self)
        self.quiet_loggers()

    def quiet_loggers(self) -> None:
        """Ray's Python loggers write here, not to the cell."""
        ray_logger = logging.getLogger("ray")
        ray_logger.handlers = [_ToNoise(self)]
        ray_logger.propagate = False

    def _restore(self) -> None:
        if self._saved_fd2 is not None:
            os.dup2(self._saved_fd2, 2)

    def _sift(self, read_end: int, forward: int) -> None:
        """Pass fd 2's bytes on to where they went before, taking Ray's lines out. This thread
        must never stop while fd 2 is its pipe (writers would block once the pipe is full): a
        chunk it cannot sift is passed on whole."""
        pending = b""
        while True:
            waiting = select.select([read_end], [], [], _HOLD_SECONDS if pending else None)[0]
            if not waiting:  # a held partial line got no end: it was not Ray's
                _write_all(forward, pending)
                pending = b""
                continue
            try:
                chunk = os.read(read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                _write_all(forward, pending)
                return
            try:
                pending = self._pass_on(pending + chunk, forward)
            except Exception:
                _write_all(forward, pending + chunk)
                pending = b""

    def _pass_on(self, data: bytes, forward: int) -> bytes:
        """Ray's whole lines to ``say``, the rest to ``forward``; what may still become one of
        Ray's lines is returned, to wait for its end."""
        *lines, pending = data.split(b"\n")
        passed = []
        for line in lines:
            if _RAY_LINE.match(line):
                self.say(line.decode("utf-8", "replace"))
            else:
                passed.append(line + b"\n")
        if pending and not _might_be_rays(pending):
            passed.append(pending)
            pending = b""
        _write_all(forward, b"".join(passed))
        return pending


def _might_be_rays(partial: bytes) -> bool:
    """A partial line that is, or may still grow into, one of Ray's: held back briefly."""
    return partial.startswith(b"[") and (len(partial) < _HEAD_SIZE or _RAY_LINE.match(partial) is not None)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except OSError:
            return


class _ToNoise(logging.Handler):
    """Ray's Python log records, as lines for ``RayNoise.say``."""

    def __init__(self, noise: RayNoise) -> None:
        super().__init__()
        self.noise = noise
        self.setFormatter(logging.Formatter("[ray] %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.noise.say(self.format(record))
        except Exception:  # a log line must never break the kernel
            self.handleError(record)


def _reroute_listener(noise: RayNoise) -> None:
    """The driver's error listener prints the cluster's messages with ``print_to_stdstream``,
    looked up in its module when it prints: ours sends them to ``noise`` instead."""
    from ray._private import worker

    def print_to_noise(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            noise.say(f"[ray] ({data.get('pid', 'ray')}) {line}")

    worker.print_to_stdstream = print_to_noise


noise = RayNoise()
