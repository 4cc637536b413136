"""One cell run as the notebook shows it: the live panel or plain text, in front or in the background.

Shared by ``%%sandbox`` and ``%%rayrun``. The panel is the run's sink and event callback
while the run goes; when it ends, the panel's display is replaced (by display id) with a
static transcript of it and the widget is closed, so what the cell shows outlives the kernel
(``widgets.transcript``). A background cell shows its panel, or without widgets a line that
the end of the run turns into its final status; the handle is ``%jx wait N``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from IPython.display import display

from jupyter_exec.background import BackgroundRuns
from jupyter_exec.events import EventCallback, RunEvent, RunResult, ending
from jupyter_exec.manager import Manager
from jupyter_exec.output import ConsoleSink
from jupyter_exec.spec import RunSpec
from jupyter_exec.timeline import Timeline
from jupyter_exec.trace.explore import TraceView
from jupyter_exec.trace.model import Trace

__all__ = ["background_runs", "follow_trace", "probe_widgets", "run_cell", "widgets_wanted"]

_background: dict[int, BackgroundRuns] = {}
_NOTICEABLE = 0.05  # seconds: a wait before the run that its timeline names


def background_runs(manager: Manager) -> BackgroundRuns:
    """The background runs of ``manager`` (one registry per manager, whichever magic started them)."""
    return _background.setdefault(id(manager), BackgroundRuns(manager))


def probe_widgets() -> None:
    """Find out early whether the frontend draws widgets (see ``widgets.probe_frontend``)."""
    try:
        from jupyter_exec.widgets import probe_frontend
    except ImportError:  # anywidget / ipywidgets not installed: plain text
        return
    probe_frontend()


def widgets_wanted(manager: Manager, quiet: bool = False) -> bool:
    """Whether to show widgets: ``ExecConfig.widgets``, with ``auto`` meaning "a widget frontend is connected"."""
    if quiet:
        return False
    try:
        from jupyter_exec.widgets import widgets_enabled
    except ImportError:  # anywidget / ipywidgets not installed: plain text
        return False
    return widgets_enabled(manager.config.widgets)


def follow_trace(trace: Trace, manager: Manager) -> TraceView | None:
    """The tree widget of ``trace``, displayed here for ``explore`` to keep current (the
    extension's ``trace.explore.Viewer``); None where no widget frontend would draw it."""
    if not widgets_wanted(manager):
        return None
    from jupyter_exec.widgets import TreeWidget

    view = TreeWidget.of(trace, manager)
    display(view)
    return view


def run_cell(
    shell: Any,
    manager: Manager,
    cell: str,
    spec: RunSpec,
    *,
    quiet: bool = False,
    background: bool = False,
    runner: Callable[..., RunResult] | None = None,
) -> Any:
    """Run ``cell``; bind its ``--out`` values; return its value (None in the background: ``%jx wait N``).

    ``runner`` replaces ``manager.run`` (``--trace`` records a node around it).
    """
    timeline = Timeline()  # the run's time counts from here: a wait for the frontend below is in it
    sink: Any = _QuietSink() if quiet else None
    on_event: EventCallback | None = None
    panel: Any = None
    if widgets_wanted(manager, quiet):
        from jupyter_exec.widgets import RunWidget

        panel = RunWidget(cancel=manager.cancel, read_log=manager.log_text, background=background)
        sink, on_event = panel, _panel_then_transcript(panel)
    elif background:
        on_event = _status_line()
    if time.time() - timeline.times["queued"] > _NOTICEABLE:  # the frontend asked whether it draws widgets
        timeline.mark("frontend_asked")

    def bind(result: RunResult) -> None:
        shell.user_ns.update(result.outputs)

    try:
        if background:
            background_runs(manager).start(
                cell, spec, namespace=shell.user_ns, sink=sink, on_event=on_event, bind=bind, runner=runner
            )
            return None
        result = (runner or manager.run)(
            cell, spec, namespace=shell.user_ns, sink=sink, on_event=on_event, timeline=timeline
        )
    finally:
        if panel is not None and not panel.run_id:  # refused before it was recorded: never shown
            panel.close()
    bind(result)
    return result.value


def _panel_then_transcript(panel: Any) -> EventCallback:
    """The panel's event callback. The panel is shown once the run is recorded (a run refused
    before that leaves only its error in the cell); when the run ends, the panel's display
    becomes its static transcript and the widget is closed (its state is not worth saving)."""
    shown: list[Any] = []

    def on_event(event: RunEvent) -> None:
        panel.event(event)
        if event["kind"] == "created":
            shown.append(display(panel, display_id=True))
        elif event["kind"] == "finished" and shown:
            shown[0].update(panel.transcript().bundle(), raw=True)
            panel.close()

    return on_event


def _status_line() -> EventCallback:
    """A background run's one line where no panel is drawn: its id while it runs, how it ended after."""
    shown: list[Any] = []  # the line's display handle, made when the run has an id

    def on_event(event: RunEvent) -> None:
        if event["kind"] == "created":
            run_id = event["run_id"]
            line = f"run {run_id} in the background: %jx wait {run_id} for its result"
            shown.append((run_id, display({"text/plain": line}, raw=True, display_id=True)))
        elif event["kind"] == "finished" and shown:
            run_id, handle = shown[0]
            handle.update({"text/plain": f"run {run_id} {ending(event)}"}, raw=True)

    return on_event


class _QuietSink(ConsoleSink):
    """Shows displays but not streamed text (which still goes to the log)."""

    def output(self, stream: str, text: str) -> None:
        pass
