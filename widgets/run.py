"""The live run panel shown in a ``%%sandbox`` / ``%%rayrun`` cell.

It is the run's output sink (log tail) and its event callback (status, resource
samples); every change is a trait update, which ipykernel sends from whichever thread
makes it. Output is batched: at most about five updates a second however fast a cell
prints. The Cancel and "full log" buttons call back into the manager. When the run is
over, ``transcript()`` is what the cell keeps in its place (``widgets.transcript``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import traitlets

from jupyter_exec.events import RunEvent, ending
from jupyter_exec.output import InCell
from jupyter_exec.status import FINAL
from jupyter_exec.timeline import breakdown, segments
from jupyter_exec.units import format_bytes, format_duration, format_size

from ._common import FallbackWidget, route_to_subshell
from .transcript import Transcript

__all__ = ["RunWidget"]

_FLUSH_EVERY = 0.2
_FULL_LOG_CAP = 2_000_000
_HEAD = 20  # first lines of a long log kept for the transcript, besides the tail


class RunWidget(FallbackWidget):
    """Status, limits, elapsed time, CPU/memory/GPU sparklines, log tail, Cancel."""

    _esm = Path(__file__).with_name("run.js")
    _css = Path(__file__).with_name("run.css")

    run_id = traitlets.Int(0).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    backend = traitlets.Unicode("").tag(sync=True)
    limits = traitlets.Dict().tag(sync=True)
    limits_text = traitlets.Unicode("").tag(sync=True)  # "mem 512m · cpus 1 · timeout 30s"
    status = traitlets.Unicode("starting").tag(sync=True)
    started = traitlets.Float(0.0).tag(sync=True)  # epoch seconds; the page counts elapsed
    duration = traitlets.Float(None, allow_none=True).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    ending = traitlets.Unicode("").tag(sync=True)  # the final status line (``events.ending``)
    samples: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)  # [{"t", "cpu", "memory", "gpu", ...}]
    peak_memory = traitlets.Int(None, allow_none=True).tag(sync=True)
    log: traitlets.List[list[str]] = traitlets.List().tag(sync=True)  # [[stream, line], ...], the tail
    log_lines = traitlets.Int(0).tag(sync=True)  # lines seen in all
    full_log = traitlets.Unicode("").tag(sync=True)
    background = traitlets.Bool(False).tag(sync=True)
    network = traitlets.Dict().tag(sync=True)  # a host-list run's connections in sum (events.Network)
    phases: traitlets.List[dict[str, Any]] = traitlets.List().tag(sync=True)  # timeline.segments, once it ended
    timeline_line = traitlets.Unicode("").tag(sync=True)  # timeline.breakdown: "12.3 ms: admit 0.2 ms · …"

    def __init__(
        self,
        *,
        title: str = "",
        tail: int = 200,
        max_samples: int = 120,
        cancel: Callable[[int], bool] | None = None,
        read_log: Callable[[int], str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(title=title, **kwargs)
        self._tail, self._max_samples = tail, max_samples
        self._cancel, self._read_log = cancel, read_log
        self._session: str | None = None  # the sandbox session the run is in
        self._name = ""  # the run's own title, before the session is added
        self._pending: deque[list[str]] = deque(maxlen=tail)
        self._head: list[list[str]] = []
        self._partial = {"stdout": "", "stderr": "", "info": ""}
        self._new_lines = 0
        self._lock = threading.Lock()  # the pending lines, and the status against a late cancel click
        self._timer: threading.Timer | None = None
        self._cell = InCell()
        self.on_msg(self._on_click)
        route_to_subshell(self)

    # -- the sink ---------------------------------------------------------------------------
    def output(self, stream: str, text: str) -> None:
        """A chunk of the run's stdout, stderr or info lines; whole lines reach the page in batches."""
        with self._lock:
            lines = (self._partial[stream] + text).split("\n")
            self._partial[stream] = lines.pop()
            self._add([[stream, line] for line in lines])
            if self._timer is None:
                self._timer = threading.Timer(_FLUSH_EVERY, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def _add(self, lines: list[list[str]]) -> None:
        self._pending.extend(lines)
        self._head.extend(lines[: _HEAD - len(self._head)])
        self._new_lines += len(lines)

    def display(self, bundle: dict[str, str]) -> None:
        """Rich output of the run is shown below the panel (in the panel's cell), as a cell would show it."""
        from IPython.display import publish_display_data

        self._cell.call(publish_display_data, bundle)

    def flush(self) -> None:
        """Send the lines gathered since the last flush (and, at the end, any unfinished one)."""
        with self._lock:
            self._timer = None
            if self.status in FINAL:
                for stream, rest in self._partial.items():
                    if rest:
                        self._add([[stream, rest]])
                        self._partial[stream] = ""
            if not self._new_lines:
                return
            log = (self.log + list(self._pending))[-self._tail :]
            self._pending.clear()
            total, self._new_lines = self.log_lines + self._new_lines, 0
        self.set_state({"log": log, "log_lines": total})

    def _titled(self, cell: str = "") -> str:
        """The run's title with the session it is in (and its cell's number there), if any."""
        if not self._session:
            return self._name
        return f"{self._name} · session {self._session}{cell}".removeprefix(" · ")

    # -- the event callback ----------------------------------------------------------------
    def event(self, event: RunEvent) -> None:
        """``Manager.run``'s ``on_event``."""
        if event["kind"] == "created":
            limits = {k: v for k, v in event["limits"].items() if v not in (None, False)}
            backend, isolation = event["backend"], event["isolation"]
            self._session, self._name = event.get("session"), self.title or event["name"] or ""
            self.set_state(
                {
                    "run_id": event["run_id"],
                    "backend": backend if isolation == backend else f"{backend} ({isolation})",
                    "limits": limits,
                    "limits_text": _describe(limits),
                    "title": self._titled(),
                }
            )
        elif event["kind"] == "running":
            cell = event.get("cell")
            title = self._titled(f" #{cell}" if cell else "")
            self.set_state({"status": "running", "started": event["started"], "title": title})
        elif event["kind"] == "sample":
            self.samples = ([*self.samples, dict(event)])[-self._max_samples :]
        elif event["kind"] == "finished":
            with self._lock:  # against a cancel click setting "cancelling" after this
                self.status = event["status"]
            self.flush()
            duration = event["duration"] or (time.time() - self.started if self.started else None)
            timeline = event.get("timeline") or {"marks": [], "notes": {}}
            self.set_state(
                {
                    "phases": list(segments(timeline["marks"], timeline["notes"])),
                    "timeline_line": breakdown(timeline["marks"], timeline["notes"]),
                    "duration": duration,
                    "error": event["error"] or "",
                    "peak_memory": event["peak_memory"],
                    "network": dict(event.get("network") or {}),
                    "ending": ending({**event, "duration": duration}, self.limits.get("memory")),
                }
            )

    # -- clicks from the page --------------------------------------------------------------
    def _on_click(self, widget: Any, content: dict[str, Any], buffers: list) -> None:
        action = content.get("action")
        if action == "cancel" and self._cancel is not None and self.status not in FINAL:
            if self._cancel(self.run_id):
                with self._lock:  # the run may have ended (cancelled) meanwhile: keep its final status
                    if self.status not in FINAL:
                        self.status = "cancelling"
        elif action == "full_log" and self._read_log is not None:
            self.full_log = self._whole_log()

    def _whole_log(self) -> str:
        """The run's log file for the "Full log" view: never empty, so the page always hears back."""
        if not self.run_id:
            return "(the run is starting)"
        text = self._read_log(self.run_id) if self._read_log is not None else ""
        if not text:  # Manager.log_text says why a log is empty; another reader may not
            return f"(run {self.run_id}: an empty log)"
        if len(text) > _FULL_LOG_CAP:
            return (
                f"[first {len(text) - _FULL_LOG_CAP:,} characters left out; %jx logs {self.run_id}]\n"
                + text[-_FULL_LOG_CAP:]
            )
        return text

    # -- what stays in the notebook --------------------------------------------------------
    def transcript(self) -> Transcript:
        """The panel as static text: its header, the first and last lines of the log, the status line."""
        total, tail = self.log_lines, self.log
        head = self._head if total > len(tail) else []
        overlap = max(len(head) + len(tail) - total, 0)
        title = f"run {self.run_id}" + (f" · {self.title}" if self.title else "")
        header = " · ".join(p for p in (title, self.backend, self.limits_text) if p)
        footer = self.ending or (f"{self.status} (background)" if self.background else self.status)
        if self.network:
            footer += f" · {_network_line(self.network)}"
        return Transcript(
            run_id=self.run_id,
            status=self.status,
            header=header,
            head=head,
            tail=tail[overlap:],
            left_out=max(total - len(head) - len(tail), 0),
            footer=footer,
            phases=list(self.phases),
            timeline=self.timeline_line,
        )

    def text_fallback(self) -> str:
        return self.transcript().text()

    def html_fallback(self) -> str:
        return self.transcript().html()


def _describe(limits: dict[str, Any]) -> str:
    """The limits a user set, as they would type them: ``mem 512m · cpus 1 · timeout 30s``."""
    parts = []
    if limits.get("memory"):
        parts.append(f"mem {format_size(limits['memory'])}")
    if limits.get("cpus"):
        parts.append(f"cpus {limits['cpus']:g}")
    if limits.get("timeout"):
        parts.append(f"timeout {format_duration(limits['timeout'])}")
    if limits.get("gpus"):
        parts.append(f"gpus {limits['gpus']}")
    if limits.get("network"):
        hosts = limits["network"]  # True (--network alone) or a host list as typed
        parts.append("network" if hosts is True else f"network {hosts}")
    return " · ".join(parts)


def _network_line(network: dict[str, Any]) -> str:
    """``network files.test: 3 connections, 1 refused (other.test:80); 1.2 KiB out, 4.0 KiB in``."""
    refused = network.get("refused") or 0
    to = f" ({', '.join(network.get('refused_to') or [])})" if refused else ""
    return (
        f"network {network.get('hosts')}: {network.get('connections', 0)} connections, {refused} refused{to}; "
        f"{format_bytes(network.get('sent') or 0)} out, {format_bytes(network.get('received') or 0)} in"
    )
