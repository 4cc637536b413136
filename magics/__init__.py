"""IPython magics: ``%%sandbox``, ``%%rayrun`` and ``%jx``. Installed as ``jupyter_exec.magics``."""

from __future__ import annotations

from typing import Any

from .rayrun import RayMagics
from .sandbox import ExecMagics

__all__ = ["ExecMagics", "RayMagics", "register", "unregister"]


def register(ipython: Any) -> None:
    magics = ExecMagics(ipython)
    ipython.register_magics(magics)
    ipython.register_magics(RayMagics(ipython, magics.manager))
    ipython.configurables.append(magics.manager.config)


def unregister(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("ExecMagics", None)
    ipython.magics_manager.registry.pop("RayMagics", None)
    if magics is not None:
        magics.manager.shutdown()
        for kind in ("line", "cell"):
            for name in ("sandbox", "rayrun", "jx"):
                ipython.magics_manager.magics[kind].pop(name, None)
