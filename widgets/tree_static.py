"""What a tree widget leaves in the notebook: the tree as text/plain and text/html, no widget.

The widget's view needs its model in the kernel; a reopened notebook, nbconvert or a
colleague's JupyterLab has none and would say "Error displaying widget: model not found".
So, like a run's transcript (``transcript.py``), a shown tree's display becomes this static
form when the cell that showed it ends: the trace's name and best node, the best path, and one
row per node (status, metric, params), indented under its parent, the best path highlighted.
Styles are inline: no stylesheet of ours is loaded where the notebook is read.
"""

from __future__ import annotations

import html

from jupyter_exec.trace.model import Node, Trace
from jupyter_exec.trace.view import render

from .transcript import STATUS_COLOURS

__all__ = ["LIMIT", "tree_bundle", "tree_html"]

#: Node rows kept in the notebook (the text view's limit too); the rest are counted.
LIMIT = 500
_INDENT = 16  # px per level


def tree_bundle(trace: Trace) -> dict[str, str]:
    """The static form of ``trace``: text/plain and text/html."""
    return {"text/plain": render(trace, LIMIT), "text/html": tree_html(trace)}


def tree_html(trace: Trace) -> str:
    """HTML that reads without any stylesheet or script."""
    best = trace.sota()
    path = {node.id for node in trace.ancestors(best.id)} if best else set()
    head = f"trace {trace.name} · {len(trace)} nodes · " + (
        f"best #{best.id} {trace.metric}={_value(best, trace)} ({'max' if trace.maximize else 'min'})"
        if best
        else "no success yet"
    )
    parts = [f'<div class="jx-tree-static-head" style="font-weight:600">{html.escape(head)}</div>']
    if best:
        route = " → ".join(f"#{node.id}" for node in trace.ancestors(best.id))
        parts.append(f'<div class="jx-tree-static-path" style="color:#616161">best path: {route}</div>')
    depth: dict[int, int] = {}
    rows: list[str] = []
    for node in trace.walk():
        depth[node.id] = 0 if node.parent is None else depth.get(node.parent, 0) + 1
        if len(rows) < LIMIT:
            rows.append(_row(trace, node, depth[node.id], node.id in path, best is not None and node.id == best.id))
    parts.append(f'<div class="jx-tree-static-nodes" style="margin-top:4px">{"".join(rows)}</div>')
    if len(trace) > LIMIT:
        more = f"… {len(trace) - LIMIT:,} more nodes not kept here: trace.to_dataframe() has them all"
        parts.append(f'<i style="color:#757575">{html.escape(more)}</i>')
    name = html.escape(trace.name)
    style = "font-family:var(--jp-ui-font-family,sans-serif);font-size:12px"
    return f'<div class="jx-tree-static" data-trace="{name}" style="{style}">{"".join(parts)}</div>'


def _row(trace: Trace, node: Node, depth: int, on_path: bool, is_best: bool) -> str:
    colour = STATUS_COLOURS.get(node.status, "#9e9e9e")
    cells = [
        f'<span style="color:{colour}">●</span>',
        f'<span style="color:#666">#{node.id}</span>',
        f'<span style="color:{colour}">{html.escape(node.status)}</span>',
    ]
    value = _value(node, trace)
    if value:
        cells.append(f"{html.escape(trace.metric)}={value}")
    if node.params:
        cells.append(html.escape(" ".join(f"{k}={v}" for k, v in node.params.items())))
    if node.error and node.status != "succeeded":
        cells.append(f'<span style="color:#c62828">{html.escape(node.error.splitlines()[0][:80])}</span>')
    if node.run_id is not None:
        cells.append(f'<span style="color:#666">run {node.run_id}</span>')
    if is_best:
        cells.append('<span style="color:#e65100">★ SOTA</span>')
    style = f"padding-left:{4 + depth * _INDENT}px;white-space:nowrap;line-height:20px"
    if on_path:
        style += ";background:#fff8e1;font-weight:600"
    status = html.escape(node.status)
    return (
        f'<div class="jx-tree-static-node" data-id="{node.id}" data-status="{status}" style="{style}">'
        f"{'&ensp;'.join(cells)}</div>"
    )


def _value(node: Node, trace: Trace) -> str:
    value = node.metrics.get(trace.metric)
    return "" if value is None else f"{value:.6g}"
