"""``%jx resources``: one card per backend — available or why not, and what it can offer now.

A snapshot with nothing to click, so it is plain HTML and text rather than a widget: what the
cell shows is what a reopened notebook, nbconvert or a colleague reads (a widget's view needs
its kernel, and without it JupyterLab says "model not found"). Styles are inline: no
stylesheet of ours is loaded where the notebook is read.
"""

from __future__ import annotations

import html
import json
from typing import Any

from jupyter_exec.resources import BackendResources, format_report
from jupyter_exec.units import format_bytes

__all__ = ["ResourcesCards"]

_BOX = (
    "border:1px solid #ddd;border-left:4px solid {edge};border-radius:4px;padding:6px 8px;"
    "min-width:220px;max-width:420px;{muted}"
)
_GREY = "color:#666"


class ResourcesCards:
    """Cards from ``jupyter_exec.resources.resources_report``: Ray nodes, the container engine and
    pool, this machine; text/plain is ``format_report``'s."""

    def __init__(self, backends: list[BackendResources]) -> None:
        self.backends = backends

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": format_report(self.backends), "text/html": self.html()}

    def html(self) -> str:
        cards = "".join(_card(entry) for entry in self.backends)
        style = "display:flex;flex-wrap:wrap;gap:8px;font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"
        return f'<div class="jx-resources" style="{style}">{cards}</div>'


def _card(entry: BackendResources) -> str:
    ok = entry["ok"]
    state = ("running in this kernel" if entry["started"] else "available") if ok else "unavailable"
    head = (
        f'<span style="font-weight:700;font-size:13px">{html.escape(entry["name"])}</span> '
        f'<span style="{_GREY}">{html.escape(entry["isolation"])}</span>'
        f'<span style="float:right">{state}</span>'
    )
    parts = [f'<div class="jx-card-head" style="margin-bottom:4px">{head}</div>']
    if not ok:
        reason = entry["reason"] + (f" — {entry['fix']}" if entry["fix"] else "")
        parts.append(f'<div class="jx-card-reason" style="color:#c62828">{html.escape(reason)}</div>')
    rows = []
    for key, value in entry["resources"].items():
        if key == "nodes" and isinstance(value, list):
            rows += [
                _row(f"node {n.get('hostname') or n.get('address') or ''}", _value("resources", n.get("resources")))
                for n in value
            ]
        else:
            rows.append(_row(key.replace("_", " "), _value(key, value)))
    if rows:
        parts.append(f'<table class="jx-card-table">{"".join(rows)}</table>')
    elif ok and not entry["started"]:
        parts.append(_note("not started in this kernel; starts on first use"))
    parts += [_note(note) for note in entry["notes"]]
    style = _BOX.format(edge="#2e7d32" if ok else "#9e9e9e", muted="" if ok else _GREY)
    return f'<div class="jx-card" data-ok="{str(ok).lower()}" style="{style}">{"".join(parts)}</div>'


def _row(key: str, value: str) -> str:
    th = f'<th style="text-align:left;font-weight:normal;{_GREY};padding-right:8px">{html.escape(key)}</th>'
    return f"<tr>{th}<td>{html.escape(value)}</td></tr>"


def _note(text: str) -> str:
    return f'<div class="jx-card-note" style="font-size:11px;{_GREY}">{html.escape(text)}</div>'


def _value(key: str, value: Any) -> str:
    """A figure as a person reads it: memory in binary units, integers whole, yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and "memory" in key.lower() and value > 1 << 20:
        return format_bytes(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    if isinstance(value, dict):
        return " · ".join(f"{k} {_value(k, v)}" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value)
