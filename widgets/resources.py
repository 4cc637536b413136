"""``%jx resources``: one card per backend — available or why not, and what it can offer now."""

from __future__ import annotations

import html
from pathlib import Path

import traitlets

from jupyter_exec.resources import BackendResources, format_report

from ._common import FallbackWidget

__all__ = ["ResourcesWidget"]


class ResourcesWidget(FallbackWidget):
    """Cards from ``jupyter_exec.resources.resources_report``: Ray nodes, Docker daemon and pool, this machine."""

    _esm = Path(__file__).with_name("resources.js")
    _css = Path(__file__).with_name("resources.css")

    backends: traitlets.List[BackendResources] = traitlets.List().tag(sync=True)

    def text_fallback(self) -> str:
        return format_report(self.backends)

    def html_fallback(self) -> str:
        return f"<pre class='jx-resources-fallback'>{html.escape(self.text_fallback())}</pre>"
