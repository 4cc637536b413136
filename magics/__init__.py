"""IPython magics: ``%%sandbox``, ``%%rayrun`` and ``%jx``. Installed as ``jupyter_exec.magics``."""

from __future__ import annotations

import sys
from typing import Any, Callable

from ..manager import Manager

from .rayrun import RayMagics
from .sandbox import ExecMagics

__all__ = ["ExecMagics", "RayMagics", "register", "unregister"]


def register(ipython: Any) -> None:
    magics = ExecMagics(ipython)
    ipython.register_magics(magics)
    ipython.register_magics(RayMagics(ipython, magics.manager))
    ipython.configurables.append(magics.manager.config)
    magics.stop_on_exit = _stop_on_exit(magics.manager)
    ipython.observe(magics.stop_on_exit, names="exit_now")


def unregister(ipython: Any) -> None:
    magics = ipython.magics_manager.registry.pop("ExecMagics", None)
    ipython.magics_manager.registry.pop("RayMagics", None)
    if magics is not None:
        ipython.unobserve(magics.stop_on_exit, names="exit_now")
        magics.manager.shutdown()
        for kind in ("line", "cell"):
            for name in ("sandbox", "rayrun", "jx"):
                ipython.magics_manager.magics[kind].pop(name, None)


def _stop_on_exit(manager: Manager) -> Callable[[dict], None]:
    """Stop what runs started as soon as the kernel is told to shut down (ipykernel sets
    ``exit_now``), before ipykernel SIGTERMs every process in its group: an embedded Ray
    killed under its driver made the kernel's own exit hang until it was killed, 5 s later."""
    def stop(change: dict) -> None:
        if not change["new"]:
            return
        manager.shutdown()
        ray_backend = sys.modules.get("jupyter_exec.backends.ray")   # jupyter_exec.map may have connected alone
        if ray_backend is not None:
            ray_backend.connection().close()
    return stop
