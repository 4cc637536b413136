"""Nodes' states: the live sandbox session a node's code ran in, kept so its children start from it.

With ``explore(..., from_state=True)`` (or ``%%sandbox --trace T --parent N --from-state``) a
child's code runs in a fork of its parent's session (``Manager.fork_session``): it sees
everything its ancestors' cells defined, and nothing runs twice. A ``--trace`` cell with
``--session NAME`` records that session as its node's state (the user's: never ended here).

The states ``explore`` makes are held within ``ExecConfig.state_budget`` (a count and a
memory, e.g. ``8,4g``); past it the least promising are released first (failed nodes, then
by the trace's metric, worst first, then the oldest), never the one just kept. A node whose
state is gone when a child wants it is rebuilt: its ancestors' cells and its own run again,
root first, in a new session, which the user is told. ``explore`` releases its states when it
ends; the next call rebuilds what it needs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from jupyter_exec.manager import Manager, RunResult
from jupyter_exec.runner.protocol import OutputSink
from jupyter_exec.spec import RunSpec
from jupyter_exec.status import Status
from jupyter_exec.units import parse_count, parse_size

from .model import Node, Trace

__all__ = ["NodeStates", "StateBudget"]


class StateBudget:
    """How many node states, and how much of their memory, may be held at once (``8,4g``: eight,
    at most 4 GiB in all; ``8``: eight, any memory)."""

    def __init__(self, text: str) -> None:
        count, _, memory = text.partition(",")
        where = "ExecConfig.state_budget"
        self.count = int(parse_count(count.strip() or "1", where, example="8,4g"))
        self.memory = parse_size(memory.strip(), where) if memory.strip() else None


class NodeStates:
    """The states of one trace's nodes (see the module docstring). ``spec``: how their sessions
    run (backend, limits); ``say``: where the user is told of a rebuild."""

    def __init__(
        self, manager: Manager, trace: Trace, spec: RunSpec, budget: StateBudget, say: Callable[[str], None]
    ) -> None:
        self.manager, self.trace, self.spec, self.budget, self.say = manager, trace, spec, budget, say
        self.held: dict[int, str] = {}  # node id -> its session, made here (released within the budget)
        self.named: dict[int, str] = {}  # node id -> the user's session recorded as its state
        self._lock = threading.Lock()
        self._rebuilding = threading.Lock()

    def session_of(self, node_id: int) -> str:
        """The name of the session made here for node ``node_id``."""
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', self.trace.name)[:40]}-n{node_id}"

    def run(self, node: Node, code: str, spec: RunSpec, sink: OutputSink | None = None, **options: Any) -> RunResult:
        """Run ``node``'s ``code`` from its parent's state (a new session for a root), and keep the
        session it ran in as the node's state. ``spec.session`` names it (default: one named for
        the node)."""
        name = spec.session or self.session_of(node.id)
        if node.parent is not None:
            self.manager.fork_session(self.state(node.parent, sink), name)
        try:
            result = self.manager.run(code, replace(spec, session=name, fork=None), sink=sink, **options)
        except BaseException:
            if name in self._living():  # a failed node's state is worth nothing to its children
                self.manager.end_session(name)
            raise
        self.keep(node.id, name, made_here=spec.session is None)
        return result

    def state(self, node_id: int, sink: OutputSink | None = None) -> str:
        """Node ``node_id``'s live session, rebuilt first if it is gone."""
        with self._rebuilding:
            living = self._living()
            with self._lock:
                name = self.held.get(node_id) or self.named.get(node_id)
            if name is not None and name in living:
                return name
            return self._rebuild(node_id, sink)

    def _rebuild(self, node_id: int, sink: OutputSink | None) -> str:
        path = self.trace.ancestors(node_id)
        name = self.session_of(node_id)
        if name in self._living():
            self.manager.end_session(name)
        self.say(
            f"[jupyter-exec] node {node_id}: its state was released; rebuilding it: the cells of nodes "
            f"{', '.join(str(n.id) for n in path)} run again, root first, in a new session {name}\n"
        )
        session = replace(self.spec, session=name, fork=None, name=f"{self.trace.name}/{node_id} (rebuild)")
        for ancestor in path:
            self.manager.run(ancestor.code, session, sink=sink)
        self.keep(node_id, name, made_here=True)
        return name

    def keep(self, node_id: int, name: str, made_here: bool = True) -> None:
        """Hold session ``name`` as node ``node_id``'s state (``made_here``: within the budget,
        else the user's own, never ended here); release the least promising past the budget."""
        with self._lock:
            (self.held if made_here else self.named)[node_id] = name
        if made_here:
            self._trim(keep=node_id)

    def _trim(self, keep: int) -> None:
        """Release states, least promising first, until those held are within the budget."""
        memory = {info["name"]: info["memory"] or 0 for info in self.manager.sessions()}
        with self._lock:
            order = sorted((n for n in self.held if n != keep), key=self._promise)
            held = dict(self.held)
        total = sum(memory.get(name, 0) for name in held.values())
        while order and (
            len(held) > self.budget.count or (self.budget.memory is not None and total > self.budget.memory)
        ):
            node_id = order.pop(0)
            name = held.pop(node_id)
            total -= memory.get(name, 0)
            self.release(node_id)

    def _promise(self, node_id: int) -> tuple[int, float, float]:
        """Sorts least promising first: failed nodes, then the worse metric, then the older."""
        node = self.trace.nodes[node_id]
        value = self.trace.value(node)
        if node.status != Status.SUCCEEDED or value is None:
            return (0, 0.0, node.created)
        return (1, value if self.trace.maximize else -value, node.created)

    def release(self, node_id: int) -> None:
        """End the state held for ``node_id`` (a rebuild makes it again if a child wants it)."""
        with self._lock:
            name = self.held.pop(node_id, None)
        if name is not None and name in self._living():
            self.manager.end_session(name)

    def close(self) -> None:
        """Release every state held here."""
        for node_id in list(self.held):
            self.release(node_id)

    def _living(self) -> set[str]:
        return {info["name"] for info in self.manager.sessions()}
