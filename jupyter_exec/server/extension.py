"""Loading the extension into a Jupyter server: read the config the kernels read, register the routes."""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from jupyter_exec.config import ExecConfig

from .handlers import ROUTES
from .queries import API_PREFIX, PanelQueries

__all__ = ["load"]


def load(server_app: Any) -> None:
    """Serve the API for the store the kernels of this server write.

    ``ExecConfig`` is read with the server as parent, so ``c.ExecConfig.data_dir`` in a
    Jupyter config file and ``JX_DATA_DIR`` in the environment point the server and the
    kernels it starts at the same store.
    """
    config = ExecConfig(parent=server_app)
    queries = PanelQueries(config.store_path)
    base = url_path_join(server_app.web_app.settings["base_url"], API_PREFIX)
    server_app.web_app.add_handlers(
        ".*$", [(url_path_join(base, pattern), handler, {"queries": queries}) for pattern, handler in ROUTES]
    )
    server_app.log.info("jupyter-exec: side panel API at %s (store %s)", base, config.store_path)
