"""What a run leaves in the notebook once it is over: a static copy of its panel, no widget.

A widget's view needs its model, which lives in the kernel. After a restart, in nbconvert
(with or without widget state) or in a colleague's JupyterLab the model is gone, and
JupyterLab prefers the widget's mime type to any fallback beside it, so the cell would say
"Error displaying widget: model not found". When a run ends its cell therefore replaces the
panel's display (same display id) by this transcript: text/plain and text/html only, with what
the run printed (stdout and stderr in order; the first and last lines of a long log and
where the rest is), its timeline (a thin bar of its phases and their one-line breakdown), its
final status line and its error. Styles are inline: no stylesheet of ours is loaded
where the transcript is read.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATUS_COLOURS", "Transcript"]

#: Status -> colour, as the run panel's and the side panel's badges show it (in JupyterLab's
#: light theme the panels take these from the theme; the transcript must carry its own).
STATUS_COLOURS = {
    "running": "#1565c0",
    "cancelling": "#ef6c00",
    "succeeded": "#2e7d32",
    "cached": "#2e7d32",
    "failed": "#c62828",
    "oom": "#c62828",
    "timeout": "#ef6c00",
    "cancelled": "#616161",
}


_STREAM_COLOURS = {"stderr": "#c62828", "info": "#757575"}


@dataclass(frozen=True)
class Transcript:
    """A run's panel as text: a header, the kept lines (``[stream, text]``), a footer."""

    run_id: int
    status: str
    header: str
    head: list[list[str]] = field(default_factory=list)  # the first lines of a long log
    tail: list[list[str]] = field(default_factory=list)  # the last lines (all of a short log)
    left_out: int = 0  # lines between head and tail that the notebook does not keep
    footer: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)  # timeline.segments
    timeline: str = ""  # timeline.breakdown

    def gap(self) -> str:
        return f"… {self.left_out:,} lines not kept here: %jx logs {self.run_id} shows them all"

    def text(self) -> str:
        """Plain text, stderr lines marked with ``!``."""
        lines = [_marked(*line) for line in self.head]
        if self.left_out:
            lines.append(f"  {self.gap()}")
        lines += [_marked(*line) for line in self.tail]
        ends = [line for line in (f"timeline {self.timeline}" if self.timeline else "", self.footer) if line]
        return "\n".join([self.header, *lines, *ends])

    def html(self) -> str:
        """HTML that reads without any stylesheet: stderr in red, info lines in grey, the footer in
        its status colour."""

        def row(stream: str, text: str) -> str:
            text = html.escape(text)
            colour = _STREAM_COLOURS.get(stream)
            return f'<span style="color:{colour}">{text}</span>' if colour else text

        rows = [row(*line) for line in self.head]
        if self.left_out:
            rows.append(f'<i style="color:#757575">{html.escape(self.gap())}</i>')
        rows += [row(*line) for line in self.tail]
        colour = STATUS_COLOURS.get(self.status, "#616161")
        parts = [f'<div class="jx-transcript-head" style="font-weight:600">{html.escape(self.header)}</div>']
        if rows:
            parts.append(f'<pre class="jx-transcript-log" style="margin:4px 0">{chr(10).join(rows)}</pre>')
        if self.timeline:
            parts.append(_timeline_html(self.phases, self.timeline))
        if self.footer:
            style = f"font-weight:600;color:{colour}"
            parts.append(f'<div class="jx-transcript-foot" style="{style}">{html.escape(self.footer)}</div>')
        status = html.escape(self.status)
        return f'<div class="jx-transcript" data-run="{self.run_id}" data-status="{status}">{"".join(parts)}</div>'

    def bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}


def _marked(stream: str, text: str) -> str:
    return f"{'!' if stream == 'stderr' else ' '} {text}"


def _timeline_html(phases: list[dict[str, Any]], line: str) -> str:
    """The run's phases as a thin bar (each part as wide as its share of the time, its label on
    hover) above their one-line breakdown."""
    total = sum(phase["seconds"] for phase in phases) or 1.0
    bar = "".join(
        f'<span title="{html.escape(phase["label"])}" style="display:inline-block;height:4px;'
        f'width:{100 * phase["seconds"] / total:.2f}%;background:{phase["colour"]}"></span>'
        for phase in phases
    )
    return (
        '<div class="jx-transcript-timeline" style="margin-top:2px">'
        f'<div style="display:flex;max-width:900px;line-height:0">{bar}</div>'
        f'<div style="color:#757575;font-size:11px">timeline {html.escape(line)}</div></div>'
    )
