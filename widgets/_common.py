"""What every jupyter-exec widget shares: a plain fallback, and a way past a busy kernel.

A cell that waits for a run keeps the kernel's main thread busy, and ipykernel handles
a widget's messages on that thread, so a Cancel click would wait for the very run it
should stop. ipykernel 7 has subshells (JEP 91): threads of their own with their own
message loop, and its shell channel thread asks each comm (``_reply_subshell_for``)
which subshell its messages go to. ``route_to_subshell`` answers "ours" for a widget's
comm, so its clicks are handled on a subshell thread while the cell is still running.
Where that is not available (older ipykernel, no kernel) the widget still works; its
clicks are simply handled when the cell ends (background runs are unaffected).
"""

from __future__ import annotations

import html
import threading
from typing import Any

import anywidget

__all__ = ["FallbackWidget", "frontend_connected", "route_to_subshell"]

_subshells: dict[int, str] = {}
_lock = threading.Lock()


def frontend_connected() -> bool:
    """True once a widget frontend (JupyterLab, Notebook 7) has opened ipywidgets' control
    comm with this kernel; false in terminal IPython, nbclient and nbconvert runs."""
    from ipywidgets import Widget
    return getattr(Widget, "_control_comm", None) is not None


def _kernel() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return getattr(get_ipython(), "kernel", None)


def _subshell(kernel: Any) -> str | None:
    """One subshell per kernel for our widgets, made on the shell channel thread (its owner)."""
    thread = getattr(kernel, "shell_channel_thread", None)
    if thread is None:
        return None
    with _lock:
        if id(kernel) not in _subshells:
            made: list[str] = []
            done = threading.Event()

            def create() -> None:
                try:
                    made.append(thread.manager._create_subshell())
                finally:
                    done.set()

            thread.io_loop.add_callback(create)
            if not done.wait(5) or not made:
                return None
            _subshells[id(kernel)] = made[0]
        return _subshells[id(kernel)]


def route_to_subshell(widget: anywidget.AnyWidget) -> bool:
    """Have the frontend's messages for ``widget`` handled on a subshell thread, so they are
    heard while a cell runs. False where the kernel cannot (the widget then works as usual)."""
    comm = getattr(widget, "comm", None)
    if comm is None or not hasattr(comm, "_reply_subshell_for"):
        return False
    kernel = _kernel()
    subshell = _subshell(kernel) if kernel is not None else None
    if subshell is None:
        return False
    comm._reply_subshell_for = lambda data, default: subshell
    return True


class FallbackWidget(anywidget.AnyWidget):
    """An anywidget whose display also carries text/plain and text/html of its state, for
    places that cannot run its JavaScript (terminal IPython, nbconvert, a saved notebook)."""

    def text_fallback(self) -> str:
        raise NotImplementedError

    def html_fallback(self) -> str:
        return f"<pre>{html.escape(self.text_fallback())}</pre>"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        data, metadata = super()._repr_mimebundle_(**kwargs)
        return {**data, "text/plain": self.text_fallback(), "text/html": self.html_fallback()}, metadata
