"""Notebook views of runs (live run panel, experiment tree). Installed as ``jupyter_exec.widgets``.

Until the widgets land, runs show as plain streamed text through ``jupyter_exec.output``.
"""
