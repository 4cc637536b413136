"""A trace as indented text, for ``%jx tree`` (the widget draws the same tree)."""

from __future__ import annotations

from .model import Node, Trace

__all__ = ["render"]


def _label(trace: Trace, node: Node, best: int | None) -> str:
    value = node.metrics.get(trace.metric)
    parts = [f"#{node.id}", node.status]
    if value is not None:
        parts.append(f"{trace.metric}={value:.6g}")
    if node.params:
        parts.append(" ".join(f"{k}={v}" for k, v in node.params.items()))
    if node.error and node.status != "succeeded":
        parts.append(f"({node.error.splitlines()[0][:80]})")
    if node.id == best:
        parts.append("★ SOTA")
    return "  ".join(parts)


def render(trace: Trace, limit: int = 500) -> str:
    """The tree, roots first, each child under its parent; at most ``limit`` node lines."""
    best = trace.sota()
    direction = "maximise" if trace.maximize else "minimise"
    head = f"trace {trace.name!r}: {direction} {trace.metric}, {len(trace)} nodes"
    head += f", best #{best.id} {trace.metric}={best.metrics[trace.metric]:.6g}" if best else ", no success yet"
    lines = [head]
    # (node id, prefix for its own line, prefix for its children's lines)
    stack = [(root, "", "") for root in reversed(trace.roots)]
    while stack and len(lines) <= limit:
        node_id, own, below = stack.pop()
        lines.append(own + _label(trace, trace.nodes[node_id], best.id if best else None))
        children = trace.child_ids(node_id)
        for position, child in reversed(list(enumerate(children))):
            last = position == len(children) - 1
            stack.append((child, below + ("└─ " if last else "├─ "), below + ("   " if last else "│  ")))
    if len(lines) > limit:
        lines.append(f"… {len(trace) - limit} more nodes; trace.to_dataframe() has them all")
    return "\n".join(lines)
