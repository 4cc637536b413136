"""IPython magics: ``%%sandbox``, ``%%rayrun`` and ``%jx``. Installed as ``jupyter_exec.magics``.

They only parse and call the kernel's one ``Manager`` (made here, when the extension
loads, and made current for ``map`` and ``explore``). Loading also hands the core what it
shows of the notebook: the tree widget that ``explore`` keeps current.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_exec.config import ExecConfig
from jupyter_exec.current import set_current_manager
from jupyter_exec.manager import Manager
from jupyter_exec.trace.explore import show_traces_with

from .cells import follow_trace, probe_widgets
from .jx import JxMagics
from .rayrun import RayMagics
from .sandbox import SandboxMagics

__all__ = ["JxMagics", "RayMagics", "SandboxMagics", "register", "unregister"]

_MAGIC_CLASSES = (SandboxMagics, RayMagics, JxMagics)
_loaded: dict[int, tuple[Manager, Callable[[dict[str, Any]], None]]] = {}


def register(ipython: Any) -> None:
    manager = Manager(ExecConfig(parent=ipython), kernel_id=_kernel_id())
    set_current_manager(manager)
    show_traces_with(follow_trace)
    probe_widgets()
    for magics in _MAGIC_CLASSES:
        ipython.register_magics(magics(ipython, manager))
    ipython.configurables.append(manager.config)
    stop = _stop_on_exit(manager)
    ipython.observe(stop, names="exit_now")
    _loaded[id(ipython)] = (manager, stop)


def unregister(ipython: Any) -> None:
    for magics in _MAGIC_CLASSES:
        ipython.magics_manager.registry.pop(magics.__name__, None)
    for kind in ("line", "cell"):
        for name in ("sandbox", "rayrun", "jx"):
            ipython.magics_manager.magics[kind].pop(name, None)
    if id(ipython) in _loaded:
        manager, stop = _loaded.pop(id(ipython))
        ipython.unobserve(stop, names="exit_now")
        manager.shutdown()
        set_current_manager(None)
        show_traces_with(None)


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).stem
    except (ImportError, RuntimeError, AttributeError):
        return None
    return name.removeprefix("kernel-")


def _stop_on_exit(manager: Manager) -> Callable[[dict[str, Any]], None]:
    """Stop what runs started as soon as the kernel is told to shut down (ipykernel sets
    ``exit_now``), before ipykernel SIGTERMs every process in its group: an embedded Ray
    killed under its driver made the kernel's own exit hang until it was killed, 5 s later."""

    def stop(change: dict[str, Any]) -> None:
        if change["new"]:
            manager.shutdown()

    return stop
