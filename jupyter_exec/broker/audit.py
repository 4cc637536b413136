"""The audit log: one JSON line per request the broker answered, appended, rotated by size.

A run's line is written when the run is over (or refused), so it holds everything at once:
time, user, decision (``ran`` or ``refused``, and why), image and its digest, runtime, limits,
code hash, status, duration and peak memory. Other requests (cancel, runs, logs, ...) get a
line each too, with their decision. A run still going when the broker died gets its line
when the broker starts again and finishes it (``records.BrokerRecords.recover``), so no request is
missing. The file is the broker's (mode 0600); past ``max_bytes`` it becomes ``FILE.1``
(``FILE.1`` becomes ``FILE.2``, ... up to ``backups``), and a new file is started.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


class AuditLog:
    """Appends one JSON object per line to ``path`` (see the module docstring)."""

    def __init__(self, path: Path, max_bytes: int = 50 << 20, backups: int = 5) -> None:
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, **record: Any) -> None:
        """Append ``record`` with the time; never raises (the broker serves on with a full disk)."""
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        line = json.dumps({"time": stamp, **record}, default=str, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            try:
                if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
                    self._rotate()
                os.write(self._fd, line)
            except OSError:
                pass

    def _rotate(self) -> None:
        os.close(self._fd)
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{number + 1}"))
        if self.backups:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fd = self._open()

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
