"""What each backend can offer now, for ``%jx resources`` (widget or text).

Each available backend is asked for its figures (``get_available_resources``): the
instance this kernel already started, else a fresh one that is never initialised, so
looking does not start Ray or fill a container pool.
"""

from __future__ import annotations

from typing import Any, TypedDict

from .backends.factory import BACKENDS
from .manager import Manager
from .units import format_bytes

__all__ = ["BackendResources", "format_report", "resources_report"]


class BackendResources(TypedDict):
    """One backend in the report: whether it works here (as ``doctor`` says), and its figures."""

    name: str
    isolation: str
    ok: bool
    reason: str
    fix: str  # "" when there is nothing to fix
    notes: list[str]
    started: bool  # in this kernel
    resources: dict[str, Any]  # get_available_resources(): each backend's own figures


def resources_report(manager: Manager) -> list[BackendResources]:
    """One entry per registered backend."""
    report = []
    for name, cls in BACKENDS.items():
        availability = cls.availability()
        started = manager.started_backend(name)
        entry: BackendResources = {
            "name": name,
            "isolation": cls.isolation,
            "ok": availability.ok,
            "reason": availability.reason,
            "fix": availability.fix,
            "notes": list(availability.notes),
            "started": started is not None,
            "resources": {},
        }
        if availability.ok:
            try:
                entry["resources"] = (started or cls(manager.config)).get_available_resources()
            except Exception as error:  # a daemon that went away: say so, keep the rest
                entry["reason"] = f"resources unavailable: {error}"
        report.append(entry)
    return report


def _value(key: str, value: Any) -> str:
    """A figure for reading: bytes in units, whole floats as integers, a mapping as ``key value``
    pairs without Ray's internal keys (``node:__internal_head__``), a string as it is."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(k, v)}" for k, v in value.items() if not str(k).startswith("node:")) or "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "memory" in key and value > 1 << 20:
        return format_bytes(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lines(key: str, value: Any) -> list[str]:
    """One figure's lines: a list of mappings (Ray's nodes) one per line under its key."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [f"{key}:"] + [f"  {_value(key, item)}" for item in value]
    if isinstance(value, list):
        return [f"{key}: {', '.join(_value(key, item) for item in value) or '-'}"]
    return [f"{key}: {_value(key, value)}"]


def format_report(report: list[BackendResources]) -> str:
    """The report as aligned text, one backend per block."""
    lines = []
    for entry in report:
        state = "available" if entry["ok"] else f"unavailable: {entry['reason']}"
        if entry["ok"] and not entry["started"]:
            state += " (not started in this kernel)"
        lines.append(f"{entry['name']:<8} {entry['isolation']:<10} {state}")
        if not entry["ok"] and entry["fix"]:
            lines.append(f"{'':<8} fix: {entry['fix']}")
        for key, value in entry["resources"].items():
            lines += [f"{'':<8} {line}" for line in _lines(key, value)]
        lines += [f"{'':<8} note: {note}" for note in entry["notes"]]
    return "\n".join(lines)
