"""The kernel's one Manager, for code that is not handed one: ``map``, ``explore``, the tree
widget. ``%load_ext jupyter_exec`` makes it current; without the extension one is made on
first use, with the running application's configuration."""

from __future__ import annotations

import threading

from .manager import Manager

__all__ = ["current_manager", "set_current_manager"]

_current: Manager | None = None
_lock = threading.Lock()


def current_manager() -> Manager:
    """The Manager whose runs show in ``%jx runs`` (made on first use when no extension is loaded)."""
    global _current
    with _lock:
        if _current is None:
            _current = Manager()
        return _current


def set_current_manager(manager: Manager | None) -> None:
    """Make ``manager`` the current one (the extension, when it loads; None when it unloads)."""
    global _current
    with _lock:
        _current = manager
