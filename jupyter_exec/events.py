"""A run as its caller sees it: the events of its life (``Manager.run``'s ``on_event``) and the
``RunResult`` it ends with.

Each event is a plain dict (so a widget can sync it as it is) typed by its ``kind``:
``created`` (the run is recorded: its id, backend, limits, log), ``running`` (submitted),
``sample`` (what it uses now, about once a second, for runs that last) and ``finished``
(its status, error, duration, peak memory and timeline). They come from the waiting thread and the
monitor's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from .status import Status
from .timeline import TimelineData
from .units import format_bytes, format_elapsed

__all__ = ["Created", "EventCallback", "Finished", "Network", "RunEvent", "RunResult", "Running", "Sample", "ending"]


class Created(TypedDict):
    """The run is recorded (before anything starts)."""

    kind: Literal["created"]
    run_id: int
    backend: str
    isolation: str
    limits: dict[str, Any]  # Limits.as_dict(): as admitted
    log_path: str
    name: str | None
    session: NotRequired[str | None]  # the sandbox session it runs in


class Running(TypedDict):
    """The backend took the run."""

    kind: Literal["running"]
    started: float  # epoch seconds
    cell: NotRequired[int | None]  # its number among its session's cells


class _Sampled(TypedDict):
    kind: Literal["sample"]
    t: float  # seconds since the monitor started


class Sample(_Sampled, total=False):
    """What the run uses now (``Monitor``): what the backend could read, beside the time."""

    memory: int | None  # bytes
    cpu: float  # percent of one core since the last sample
    gpu: float  # percent
    gpu_memory: int  # bytes


class Network(TypedDict):
    """What a host-list run (``--network HOST,...``) did on the network, in sum."""

    hosts: str  # the list, as typed
    connections: int
    refused: int
    refused_to: list[str]  # the first few host:port refused
    sent: int  # bytes out, all connections
    received: int  # bytes in


class Finished(TypedDict):
    """The run's row is finished in the store."""

    kind: Literal["finished"]
    status: Status
    error: str | None
    peak_memory: int | None
    cpu_seconds: float | None
    duration: float | None
    network: NotRequired[Network]  # a host-list run's connections, in sum
    timeline: NotRequired[TimelineData]  # the run's marks (``timeline``)


RunEvent = Created | Running | Sample | Finished
#: ``on_event(event)``: called from the waiting thread and the monitor thread.
EventCallback = Callable[[RunEvent], None]


@dataclass
class RunResult:
    """A finished, successful run: the last value and the ``--out`` values, as data."""

    run_id: int
    status: Status
    value: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)


def ending(event: Finished, memory_limit: int | None = None) -> str:
    """How a run ended, in one line: ``oom after 2.1 s · peak memory 255.9 MiB of 256.0 MiB · …``."""
    parts = [f"{event['status']} after {format_elapsed(event['duration'] or 0.0)}"]
    if event["peak_memory"]:
        parts.append(
            f"peak memory {format_bytes(event['peak_memory'])}"
            + (f" of {format_bytes(memory_limit)}" if memory_limit else "")
        )
    if event["error"]:
        parts.append(event["error"])
    return " · ".join(parts)
