"""The Jupyter server extension behind the JupyterLab side panel: a REST API over the run
store the kernels write, under ``/jupyter-exec/api/v1/``.

Installing the package enables it (``etc/jupyter/jupyter_server_config.d/jupyter_exec.json``;
``jupyter server extension list`` shows it). ``extension`` registers the routes,
``handlers`` speaks HTTP, ``queries`` reads the store and ``logs`` reads log files.
This package is the only part of jupyter-exec that imports jupyter_server.
"""

from jupyter_exec.extras import require

require("jupyter_server", "the side panel's server extension (jupyter_exec.server)")

from .extension import load as _load_jupyter_server_extension  # noqa: E402  (only once jupyter_server is known)

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_exec.server"}]
