"""What every jupyter-exec widget shares: a plain fallback, and a way past a busy kernel.

A cell that waits for a run keeps the kernel's main thread busy, and ipykernel handles
a widget's messages on that thread, so a Cancel click would wait for the very run it
should stop. ipykernel 7 has subshells (JEP 91): threads of their own with their own
message loop, and its shell channel thread asks each comm (``_reply_subshell_for``)
which subshell its messages go to. ``route_to_subshell`` answers "ours" for a widget's
comm, so its clicks are handled on a subshell thread while the cell is still running.
Where that is not available (older ipykernel, no kernel) the widget still works; its
clicks are simply handled when the cell ends (background runs are unaffected).

Whether anything can draw widgets at all is asked, not guessed: ``probe_frontend``
(run when the extension loads) opens a tiny invisible widget whose JavaScript says
hello when a frontend creates it. JupyterLab, Notebook 7 and VS Code answer; terminal
IPython, nbclient and nbconvert do not, and get plain text.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import anywidget

__all__ = [
    "FallbackWidget",
    "at_cell_end",
    "frontend_connected",
    "probe_frontend",
    "route_to_subshell",
    "widgets_enabled",
]

_subshells: dict[int, str] = {}
_lock = threading.Lock()
_hello = threading.Event()
_probes: list[tuple[float, anywidget.AnyWidget]] = []  # (when sent, the probe): kept alive


class _Probe(anywidget.AnyWidget):
    _esm = "export default { initialize({ model }) { model.send({ hello: true }); } };"


def probe_frontend() -> None:
    """Ask whatever frontend is attached to say hello if it can draw widgets (no-op outside a kernel)."""
    if _kernel() is None or _probes:
        return
    probe = _Probe()
    probe.on_msg(lambda widget, content, buffers: _hello.set())
    route_to_subshell(probe)
    _probes.append((time.monotonic(), probe))


def frontend_connected(wait: float = 1.0) -> bool:
    """True if a widget frontend answered the probe; waits for the answer at most ``wait``
    seconds after the probe was sent (a cell run right after ``%load_ext``)."""
    if _hello.is_set() or not _probes:
        return _hello.is_set()
    return _hello.wait(max(0.0, _probes[0][0] + wait - time.monotonic()))


def widgets_enabled(mode: str) -> bool:
    """``ExecConfig.widgets`` applied: ``on``, ``off``, or ``auto`` = a widget frontend answered."""
    return mode == "on" or (mode == "auto" and frontend_connected())


def at_cell_end(callback: Callable[[], None]) -> bool:
    """Call ``callback`` once, when the cell now running ends (IPython's ``post_run_cell``);
    False outside IPython, where there is no cell to end."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False

    def once(result: Any) -> None:
        shell.events.unregister("post_run_cell", once)
        callback()

    shell.events.register("post_run_cell", once)
    return True


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
        bundle = super()._repr_mimebundle_(**kwargs)
        assert bundle is not None  # anywidget answers None only for a widget without a view
        data, metadata = bundle
        return {**data, "text/plain": self.text_fallback(), "text/html": self.html_fallback()}, metadata
