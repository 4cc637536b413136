"""What runs inside a Ray worker: one cell, or one batch of fan-out items.

The cell runs in the worker process itself (no subprocess per task) through the
bootstrap's ``run_request``, so results come back as the same tagged-JSON envelope every
backend returns. This module and the bootstrap are shipped to the workers by value: a
cluster needs Ray and the same Python, not jupyter-exec.

Live output: while the cell runs, its stdout/stderr and displays are batched every
``FLUSH_EVERY`` seconds into numbered chunks pushed to the kernel's ``OutputRelay`` actor.
A cell that prints nothing costs nothing extra (a plain task, no generator). The task's
return value says how many chunks it pushed, so the kernel knows when it has them all.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import threading
import time
from typing import Any, NoReturn

from jupyter_exec.runner import bootstrap

__all__ = ["OutputRelay", "run_batch", "run_cell"]

FLUSH_EVERY = 0.05
_WHOLE = ("display", "exit")  # kinds whose items travel one by one, not joined as text
_LAST_PUSH_SECONDS = 5.0  # a worker the cell ends waits this long for its last chunk to arrive
_relays: dict[tuple[str, str], Any] = {}


class OutputRelay:
    """A kernel's mailbox (an async Ray actor): workers push numbered chunks, the kernel long-polls."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, list]] = []
        self.arrived = asyncio.Event()

    async def push(self, run_id: int, seq: int, items: list) -> None:
        self.pending.append((run_id, seq, items))
        self.arrived.set()

    async def pull(self, timeout: float) -> list[tuple[int, int, list]]:
        if not self.pending:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        self.arrived.clear()
        batch, self.pending = self.pending, []
        return batch


class _Outbox:
    """Collects a run's output and pushes it to the relay in the background, in order."""

    def __init__(self, run_id: int, relay: tuple[str, str]) -> None:
        self.run_id, self.relay_name = run_id, relay
        self.items: list[list] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, kind: str, payload: Any) -> None:
        with self._lock:
            if kind in _WHOLE:
                self.items.append([kind, payload])
            elif self.items and self.items[-1][0] == kind:
                self.items[-1][1].append(payload)  # joined at flush: no quadratic concatenation
            else:
                self.items.append([kind, [payload]])
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="jx-outbox")
                self._thread.start()

    def display(self, message: dict) -> None:
        self.add("display", message["data"])

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Push what was collected; ``wait``: until the relay has it (the process is about to end)."""
        with self._send_lock:
            with self._lock:
                batch, self.items = self.items, []
            if not batch:
                return
            batch = [[kind, payload if kind in _WHOLE else "".join(payload)] for kind, payload in batch]
            import ray

            relay = _relays.get(self.relay_name)
            if relay is None:
                relay = _relays[self.relay_name] = ray.get_actor(self.relay_name[0], namespace=self.relay_name[1])
            self.sent += 1
            pushed = relay.push.remote(self.run_id, self.sent, batch)
            if wait:
                ray.get(pushed, timeout=_LAST_PUSH_SECONDS)

    def close(self, wait: bool = False) -> int:
        """Push what is left; the number of chunks pushed in all."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush(wait)
        return self.sent


class _Capture(io.TextIOBase):
    """A text stream that feeds one of the outbox's streams."""

    encoding = "utf-8"

    def __init__(self, name: str, outbox: _Outbox) -> None:
        self.name, self.outbox = name, outbox

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.outbox.add(self.name, str(text))
        return len(text)


def run_cell(request_json: str) -> str:
    """Run one cell here, streaming its output; the envelope and where it ran, as JSON.

    JSON text both ways: Ray moves a string without pickle (and faster than a dict), so
    nothing the cell's process wrote is unpickled in the kernel.

    The cell runs in the worker's working directory (Ray's ``working_dir`` when given);
    a per-run scratch directory would cost more than the task itself.
    """
    import ray

    began = time.time()  # the kernel's timeline: how long Ray took to start a worker for the task
    request = json.loads(request_json)
    outbox = _Outbox(request["run_id"], tuple(request["relay"]))
    saved_streams, saved_cwd = (sys.stdout, sys.stderr), os.getcwd()
    devices = request.get("cuda_visible_devices")
    saved_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    sys.stdout, sys.stderr = _Capture("stdout", outbox), _Capture("stderr", outbox)
    real_exit = os._exit

    def exit_now(status: int) -> NoReturn:
        """The cell ends this worker: its output so far, and how it ended, reach the kernel first."""
        try:
            sys.stdout, sys.stderr = saved_streams
            context = ray.get_runtime_context()
            outbox.add("exit", {"code": status, "node_id": context.get_node_id(), "pid": os.getpid()})
            outbox.close(wait=True)
        finally:
            real_exit(status)

    os._exit = exit_now
    cpu_started = time.process_time()
    try:
        envelope = bootstrap.run_request(request, outbox.display)
    finally:
        os._exit = real_exit
        sys.stdout, sys.stderr = saved_streams
        if os.getcwd() != saved_cwd:  # the worker runs later cells too
            os.chdir(saved_cwd)
        if devices is not None:
            _restore_env("CUDA_VISIBLE_DEVICES", saved_devices)
    envelope["usage"] = {"cpu_seconds": time.process_time() - cpu_started}
    context = ray.get_runtime_context()
    return json.dumps(
        {
            "envelope": envelope,
            "chunks": outbox.close(),
            "node_id": context.get_node_id(),
            "task_id": context.get_task_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "pid": os.getpid(),
            "cuda_visible_devices": devices or os.environ.get("CUDA_VISIBLE_DEVICES"),
            "began": began,
        }
    )


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def run_batch(work: Any, items: list, start: int, trust: bool, arrow: bool) -> str:
    """Apply ``work`` (a function, or cell code that sees ``item``) to each item, as data (JSON):
    each item's result, or its error (``bootstrap.apply_batch``; ``arrow``: frames may come back
    as Arrow)."""
    return json.dumps(bootstrap.apply_batch(work, items, start, trust, arrow))
