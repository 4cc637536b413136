"""IPython magics: ``%%sandbox`` and ``%jx``. Installed as ``jupyter_exec.magics``."""

from __future__ import annotations

from typing import Any

from .sandbox import ExecMagics

__all__ = ["ExecMagics", "register", "unregister"]


def register(ipython: Any) -> None:
    magics = ExecMagics(ipython)
    ipython.register_magics(magics)
    ipython.configurables.append(magics.manager.config)


def unregister(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("ExecMagics", None)
    if magics is not None:
        magics.manager.shutdown()
        for kind in ("line", "cell"):
            for name in ("sandbox", "jx"):
                ipython.magics_manager.magics[kind].pop(name, None)
