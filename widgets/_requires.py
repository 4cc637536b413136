"""Imported first by the package: without the ``widgets`` extra, one line saying how to add it."""

from jupyter_exec.extras import require

require("anywidget", "jupyter_exec.widgets")
