"""The experiment tree as a picture: ``%jx tree`` and ``TreeWidget.of(trace)``.

The tree goes to the page as a few flat columns (id, parent, status, metric, a short
label) — about 20 bytes a node — and the page draws only the rows in view, so 5,000
nodes stay smooth. Clicking a node sets ``selected``; the kernel answers with its
details (code, params, metrics, limits, log tail) in ``detail``.

A widget lives only as long as its kernel, and a notebook is a document: when the cell that
showed the tree ends, its display becomes the tree's static form (``tree_static``) and the
widget is closed, as a run's panel becomes its transcript. ``explore`` keeps it live while
its cell runs; a tree grown later (a second ``explore`` of the same trace) updates the static
form in place. ``live=True`` (``%jx tree NAME --live``) keeps the clickable widget for the
kernel's lifetime instead, at the price of "model not found" once the kernel is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import traitlets
from IPython.display import DisplayHandle, display

from jupyter_exec.trace.model import Node, Trace
from jupyter_exec.trace.view import render

from ._common import FallbackWidget, at_cell_end, route_to_subshell
from .tree_static import LIMIT, tree_bundle, tree_html

if TYPE_CHECKING:
    from jupyter_exec.manager import Manager

__all__ = ["TreeWidget"]

_LABEL = 60
_TAIL = 30


def _label(node: Node) -> str:
    text = " ".join(f"{k}={v}" for k, v in node.params.items())
    return text if len(text) <= _LABEL else text[: _LABEL - 1] + "…"


class TreeWidget(FallbackWidget):
    """Nodes coloured by status, the SOTA highlighted, metric per node, collapsible, clickable."""

    _esm = Path(__file__).with_name("tree.js")
    _css = Path(__file__).with_name("tree.css")

    name = traitlets.Unicode("").tag(sync=True)
    metric = traitlets.Unicode("score").tag(sync=True)
    maximize = traitlets.Bool(True).tag(sync=True)
    columns = traitlets.Dict().tag(sync=True)  # {"id": [...], "parent": [...], "status", "value", "label"}
    sota = traitlets.Int(-1).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    detail = traitlets.Dict().tag(sync=True)

    def __init__(
        self, trace: Trace, read_log: Callable[[int], str] | None = None, *, live: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._read_log = read_log
        self._refreshed = 0.0
        self._live = live
        self._shown: DisplayHandle | None = None  # the display the cell's end turns static
        self._static = False  # the display is the static form now; the widget is closed
        self.trace = trace
        self.refresh()
        route_to_subshell(self)

    @classmethod
    def of(cls, trace: Trace, manager: Manager | None = None, *, live: bool = False) -> TreeWidget:
        """The widget for ``trace``; with a ``Manager``, node details include the run's log tail."""
        return cls(trace, read_log=manager.log_text if manager is not None else None, live=live)

    def _ipython_display_(self) -> None:
        """Shown (``display`` or a cell's last value): the widget, which becomes the tree's
        static form when this cell ends, unless live."""
        data, metadata = self._repr_mimebundle_()
        shown = display(data, metadata=metadata, raw=True, display_id=True)
        if not self._live and self._shown is None and at_cell_end(self._settle):
            self._shown = shown

    def _settle(self) -> None:
        """The cell is over: its display becomes the static form, and the widget goes."""
        if self._shown is not None:
            self._shown.update(tree_bundle(self.trace), raw=True)
            self._static = True
            self.close()

    def refresh(self, trace: Trace | None = None, *, min_interval: float = 0.0) -> None:
        """Redraw from ``trace`` (or the same trace, grown since), unless the last redraw was
        under ``min_interval`` seconds ago: ``explore`` calls it as the trace grows."""
        if time.monotonic() - self._refreshed < min_interval:
            return
        self._refreshed = time.monotonic()
        self.trace = trace or self.trace
        if self._static and self._shown is not None:
            self._shown.update(tree_bundle(self.trace), raw=True)
            return
        nodes = [self.trace.nodes[i] for i in sorted(self.trace.nodes)]
        best = self.trace.sota()
        with self.hold_sync():
            self.name, self.metric, self.maximize = self.trace.name, self.trace.metric, self.trace.maximize
            self.columns = {
                "id": [n.id for n in nodes],
                "parent": [-1 if n.parent is None else n.parent for n in nodes],
                "status": [n.status for n in nodes],
                "value": [n.metrics.get(self.trace.metric) for n in nodes],
                "label": [_label(n) for n in nodes],
            }
            self.sota = best.id if best else -1

    @traitlets.observe("selected")
    def _on_selected(self, change: dict[str, Any]) -> None:
        node = self.trace.nodes.get(change["new"])
        self.detail = {} if node is None else self.describe(node)

    def describe(self, node: Node) -> dict[str, Any]:
        """What the page shows for a clicked node."""
        log = ""
        if self._read_log is not None and node.run_id is not None:
            try:
                log = "\n".join(self._read_log(node.run_id).splitlines()[-_TAIL:])
            except Exception as error:  # the run's row or log is gone: say so in place of the tail
                log = f"(log unavailable: {error})"
        return {
            "id": node.id,
            "parent": node.parent,
            "status": node.status,
            "code": node.code,
            "params": node.params,
            "metrics": node.metrics,
            "limits": node.spec.get("limits", {}),
            "error": node.error or "",
            "run_id": node.run_id,
            "duration": node.duration,
            "log": log,
        }

    def text_fallback(self) -> str:
        return render(self.trace, LIMIT)

    def html_fallback(self) -> str:
        return tree_html(self.trace)
