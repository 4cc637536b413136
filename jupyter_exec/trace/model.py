"""The experiment trace: every run a node in a tree, kept with the indexes schedulers need.

A ``Trace`` is an in-memory model (``TraceTables`` persists it). It holds one or more
roots; a node is added as ``running`` and finished once with a final status and its
metrics. Indexes are updated as nodes arrive — children, leaves, depth, the best metric
on each root→node path, SOTA — so a scheduler never has to scan 100,000 nodes. Every
change is appended to ``log`` so a scheduler can catch up incrementally with what it
has not seen yet, whichever order it was made and whatever was loaded from the store.

Several threads may grow one trace at once (cells with ``--trace`` and ``--bg``, a
``map(..., trace=...)``, ``explore``): every change and every read that walks the tree
holds ``lock``, and finishes get strictly increasing ``ended`` times, so the order they
were made in is the order a reload replays them in and the derived fields come out the same.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from jupyter_exec.extras import require
from jupyter_exec.status import FINAL, Status

__all__ = ["Node", "Trace"]


@dataclass
class Node:
    """One run in a trace. ``metrics`` are numbers taken from the run's result."""

    id: int
    parent: int | None
    code: str
    params: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.RUNNING
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    run_id: int | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    owner_pid: int | None = None
    # Derived by the trace when the node is added or finished:
    depth: int = 0
    accepted: bool = False  # succeeded and beat every node above it
    path_best: float | None = None  # best metric on root→node, this node included
    improvements: int = 0  # accepted nodes on root→node

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.created


class Trace:
    """A tree (forest, with several roots) of runs, optimising ``metric`` in one direction."""

    def __init__(self, name: str, metric: str = "score", maximize: bool = True) -> None:
        self.name, self.metric, self.maximize = name, metric, maximize
        self.nodes: dict[int, Node] = {}
        self.roots: list[int] = []
        self.log: list[tuple[str, int]] = []  # ("add" | "finish", node id), in order
        self._children: dict[int, list[int]] = {}
        self._leaves: set[int] = set()
        self._best: int | None = None
        self._latest_accepted: int | None = None
        self.finished_count = 0
        self.lock = threading.RLock()
        self.last_ended = 0.0  # the latest finish, so the next is later still

    # -- changes -------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Add a running node (its parent must already be here); ``finish`` records the outcome."""
        with self.lock:
            return self._add(node)

    def _add(self, node: Node) -> Node:
        if node.finished:
            raise ValueError(f"node {node.id} must be added running, then finished")
        if node.id in self.nodes:
            raise ValueError(f"node {node.id} is already in trace {self.name!r}")
        if node.parent is None:
            self.roots.append(node.id)
        else:
            parent = self.nodes.get(node.parent)
            if parent is None:
                raise ValueError(f"trace {self.name!r} has no node {node.parent} to be a parent")
            node.depth = parent.depth + 1
            self._children.setdefault(parent.id, []).append(node.id)
            self._leaves.discard(parent.id)
        self.nodes[node.id] = node
        self._leaves.add(node.id)
        self.log.append(("add", node.id))
        return node

    def finish(
        self,
        node_id: int,
        status: Status | str,
        metrics: dict[str, float] | None = None,
        *,
        error: str | None = None,
        run_id: int | None = None,
        ended: float | None = None,
    ) -> Node:
        """Record a node's outcome, once (``ended``: when, as stored; default now, after every
        finish before it)."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status!r}")
        with self.lock:
            node = self.nodes[node_id]
            if node.finished:
                raise ValueError(f"node {node_id} is already finished ({node.status})")
            node.status, node.metrics, node.error = Status(status), dict(metrics or {}), error
            node.run_id = run_id if run_id is not None else node.run_id
            node.ended = ended if ended is not None else max(time.time(), self.last_ended + 1e-6)
            self.last_ended = max(self.last_ended, node.ended)
            self._derive(node)
            return node

    def _derive(self, node: Node) -> None:
        parent = self.nodes.get(node.parent) if node.parent is not None else None
        above = parent.path_best if parent else None
        value = self.value(node)
        node.accepted = value is not None and (above is None or self.better(value, above))
        node.path_best = value if node.accepted else above
        node.improvements = (parent.improvements if parent else 0) + node.accepted
        best = None if self._best is None else self.value(self.nodes[self._best])
        if value is not None and (best is None or self.better(value, best)):
            self._best = node.id
        if node.accepted:
            self._latest_accepted = node.id
        self.finished_count += 1
        self.log.append(("finish", node.id))

    # -- queries -------------------------------------------------------------------------
    def value(self, node: Node) -> float | None:
        """The node's metric if it succeeded with a finite one, else None."""
        if node.status != Status.SUCCEEDED:
            return None
        value = node.metrics.get(self.metric)
        return value if value is not None and math.isfinite(value) else None

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def children(self, node_id: int) -> list[Node]:
        return [self.nodes[c] for c in self._children.get(node_id, ())]

    def child_ids(self, node_id: int) -> list[int]:
        return self._children.get(node_id, [])

    def is_leaf(self, node_id: int) -> bool:
        return node_id in self._leaves

    def leaves(self) -> list[Node]:
        with self.lock:
            return [self.nodes[i] for i in sorted(self._leaves)]

    def ancestors(self, node_id: int) -> list[Node]:
        """Root → node, the node included."""
        path = []
        current: int | None = node_id
        while current is not None:
            node = self.nodes[current]
            path.append(node)
            current = node.parent
        return path[::-1]

    def sota(self, mode: Literal["best", "latest"] = "best") -> Node | None:
        """The best succeeded node, or (``latest``) the last one that beat everything above it."""
        if mode not in ("best", "latest"):
            raise ValueError(f"sota mode is 'best' or 'latest', not {mode!r}")
        chosen = self._best if mode == "best" else self._latest_accepted
        return None if chosen is None else self.nodes[chosen]

    def walk(self) -> Iterator[Node]:
        """Depth-first, children in the order they were added (as the tree was when the walk began)."""
        with self.lock:
            order = []
            stack = list(reversed(self.roots))
            while stack:
                node = self.nodes[stack.pop()]
                order.append(node)
                stack.extend(reversed(self._children.get(node.id, ())))
        yield from order

    def __len__(self) -> int:
        return len(self.nodes)

    def to_dataframe(self) -> Any:
        """One row per node (pandas): status, metrics as columns, params, timings, SOTA flag."""
        pandas = require("pandas", "Trace.to_dataframe()")

        with self.lock:
            best, nodes = self._best, list(self.nodes.values())
        rows = [
            {
                "id": n.id,
                "parent": n.parent,
                "depth": n.depth,
                "status": n.status,
                **{f"metric.{k}": v for k, v in n.metrics.items()},
                **{f"param.{k}": v for k, v in n.params.items()},
                "accepted": n.accepted,
                "sota": n.id == best,
                "run_id": n.run_id,
                "created": n.created,
                "duration": n.duration,
                "error": n.error,
                "code": n.code,
            }
            for n in nodes
        ]
        frame = pandas.DataFrame(rows)
        if not frame.empty:
            frame["parent"] = frame["parent"].astype("Int64")
            frame["run_id"] = frame["run_id"].astype("Int64")
            frame["created"] = pandas.to_datetime(frame["created"], unit="s")
            frame = frame.set_index("id")
        return frame
