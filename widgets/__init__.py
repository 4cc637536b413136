"""Notebook views of runs: the live run panel, the experiment tree, backend resources (cards).

Installed as ``jupyter_exec.widgets``. Built on anywidget (ipywidgets 8), so no separate
JavaScript build; each widget's ``.js``/``.css`` sits next to its Python. Every widget
also carries a text/plain and text/html copy of its state for places without widgets.
"""

from __future__ import annotations

from . import _requires  # noqa: F401  (first: says which extra is missing, if one is)
from ._common import frontend_connected, probe_frontend, route_to_subshell, widgets_enabled
from .resources import ResourcesCards
from .run import RunWidget
from .tree import TreeWidget

__all__ = [
    "ResourcesCards",
    "RunWidget",
    "TreeWidget",
    "frontend_connected",
    "probe_frontend",
    "route_to_subshell",
    "widgets_enabled",
]
