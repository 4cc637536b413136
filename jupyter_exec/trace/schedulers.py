"""Schedulers: which node of a trace to extend next, one interface for all.

``next(trace)`` returns a ``Selection`` — a new root, or a child of node N — or ``None``
when nothing can be handed out right now (every candidate is in flight). A selection
is *pending* until the trace records a node for it (its parent is never handed out
twice meanwhile); ``release(selection)`` gives it back when its run died before a node
was recorded. ``observe(node)`` tells the scheduler a node was added or finished;
``reset()`` forgets everything.

Schedulers read the trace's change log, so each call costs what changed since the last
one, not the size of the trace: ``next`` stays well under a millisecond at 100,000 nodes.

- ``RoundRobin``: the free leaf that has waited longest (every branch gets its turn).
- ``Probabilistic(temperature, potential)``: a free leaf drawn with softmax(potential/T).
  ``TraceLength`` (potential = depth), ``SOTABased`` (potential = improvements on the
  path), each with ``inverse``; ``Random`` (flat potential).
- ``MCTS(c_puct)``: PUCT descent from the roots; any finished node may be extended.

A free leaf is a finished node without children that is not pending. Up to
``max_trace_num`` roots are started first (pending ones count).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_exec.errors import SpecError

from .model import Node, Trace

__all__ = [
    "MCTS",
    "Probabilistic",
    "Random",
    "RoundRobin",
    "SOTABased",
    "Scheduler",
    "Selection",
    "TraceLength",
    "softmax",
]


@dataclass(frozen=True)
class Selection:
    """What to run next: a child of ``parent``, or a new root when ``parent`` is None."""

    parent: int | None

    @property
    def new_root(self) -> bool:
        return self.parent is None


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Probabilities ∝ exp(v / T), computed with the max subtracted so nothing overflows."""
    if not temperature > 0:
        raise SpecError(f"temperature must be more than 0, got {temperature!r}")
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


class Scheduler:
    """The shared part: pending selections, new roots, catching up with the trace."""

    def __init__(self, *, max_trace_num: int = 1, seed: int | None = None) -> None:
        if max_trace_num < 1:
            raise SpecError(f"max_trace_num must be at least 1, got {max_trace_num!r}")
        self.max_trace_num = max_trace_num
        self.random = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the trace, its indexes and every pending selection."""
        self._trace: Trace | None = None
        self._cursor = 0
        self._pending: set[int] = set()
        self._pending_roots = 0
        self._reset_index()

    @property
    def pending(self) -> frozenset[int]:
        """Parents of selections handed out and not yet recorded as nodes."""
        return frozenset(self._pending)

    def next(self, trace: Trace) -> Selection | None:
        """What to run next, or None while every candidate is in flight (wait for a result)."""
        self._sync(trace)
        if len(trace.roots) + self._pending_roots < self.max_trace_num:
            self._pending_roots += 1
            return Selection(None)
        chosen = self._choose(trace)
        if chosen is None:
            return None
        self._pending.add(chosen)
        return Selection(chosen)

    def observe(self, node: Node) -> None:
        """A node of the scheduled trace was added or finished: settle what it answers now."""
        if self._trace is not None and node.id in self._trace.nodes:
            self._sync(self._trace)

    def release(self, selection: Selection) -> None:
        """The selection's run died before a node recorded it: its parent is free again."""
        if selection.parent is None:
            self._pending_roots = max(0, self._pending_roots - 1)
        elif selection.parent in self._pending:
            self._pending.discard(selection.parent)
            self._on_release(selection.parent)

    def _free_leaf(self, trace: Trace, node_id: int) -> bool:
        return trace.is_leaf(node_id) and trace.nodes[node_id].finished and node_id not in self._pending

    def _sync(self, trace: Trace) -> None:
        if trace is not self._trace:
            self.reset()
            self._trace = trace
        log = trace.log
        while self._cursor < len(log):
            kind, node_id = log[self._cursor]
            self._cursor += 1
            node = trace.nodes[node_id]
            if kind == "finish":
                self._on_finish(trace, node)
            elif node.parent is None:
                self._pending_roots = max(0, self._pending_roots - 1)
            else:
                self._on_add(trace, node, committed=node.parent in self._pending)
                self._pending.discard(node.parent)

    # Hooks for the indexes of each scheduler.
    def _reset_index(self) -> None:
        raise NotImplementedError

    def _choose(self, trace: Trace) -> int | None:
        raise NotImplementedError

    def _on_add(self, trace: Trace, node: Node, committed: bool) -> None:
        """``node`` was added under its parent (``committed``: answering a pending selection)."""

    def _on_finish(self, trace: Trace, node: Node) -> None:
        raise NotImplementedError

    def _on_release(self, node_id: int) -> None:
        raise NotImplementedError


class RoundRobin(Scheduler):
    """The free leaf that has waited longest: fair across branches."""

    def _reset_index(self) -> None:
        self._queue: deque[int] = deque()

    def _choose(self, trace: Trace) -> int | None:
        while self._queue:  # entries that stopped being free leaves are dropped here
            node_id = self._queue.popleft()
            if self._free_leaf(trace, node_id):
                return node_id
        return None

    def _on_finish(self, trace: Trace, node: Node) -> None:
        if trace.is_leaf(node.id):
            self._queue.append(node.id)

    def _on_release(self, node_id: int) -> None:
        self._queue.appendleft(node_id)  # it keeps the turn it lost


class _Bag:
    """A set with O(1) add, remove and uniform random choice."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.index: dict[int, int] = {}

    def add(self, item: int) -> None:
        if item not in self.index:
            self.index[item] = len(self.items)
            self.items.append(item)

    def remove(self, item: int) -> None:
        position = self.index.pop(item)
        last = self.items.pop()
        if last != item:
            self.items[position] = last
            self.index[last] = position

    def __len__(self) -> int:
        return len(self.items)


class Probabilistic(Scheduler):
    """A free leaf drawn with probability softmax(potential / temperature).

    Free leaves are grouped by potential, so a draw costs the number of distinct
    potentials, not of leaves: potentials should be coarse (the built-in ones are
    integers).
    """

    def __init__(
        self, temperature: float = 1.0, potential: Callable[[Trace, Node], float] | None = None, **options: Any
    ) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise SpecError(f"temperature must be a finite number more than 0, got {temperature!r}")
        self.temperature = float(temperature)
        self._potential = potential
        super().__init__(**options)

    def potential(self, trace: Trace, node: Node) -> float:
        return self._potential(trace, node) if self._potential else 0.0

    def _reset_index(self) -> None:
        self._bags: dict[float, _Bag] = {}
        self._bag_of: dict[int, float] = {}

    def _insert(self, trace: Trace, node_id: int) -> None:
        if self._free_leaf(trace, node_id) and node_id not in self._bag_of:
            key = self.potential(trace, trace.nodes[node_id])
            self._bags.setdefault(key, _Bag()).add(node_id)
            self._bag_of[node_id] = key

    def _take(self, node_id: int) -> None:
        key = self._bag_of.pop(node_id, None)
        if key is not None:
            bag = self._bags[key]
            bag.remove(node_id)
            if not bag:
                del self._bags[key]

    def _choose(self, trace: Trace) -> int | None:
        if not self._bags:
            return None
        keys = list(self._bags)
        weights = [len(self._bags[k]) * p for k, p in zip(keys, softmax(keys, self.temperature), strict=False)]
        bag = self._bags[self.random.choices(keys, weights)[0]]
        chosen = bag.items[self.random.randrange(len(bag))]
        self._take(chosen)
        return chosen

    def _on_add(self, trace: Trace, node: Node, committed: bool) -> None:
        assert node.parent is not None
        self._take(node.parent)

    def _on_finish(self, trace: Trace, node: Node) -> None:
        self._insert(trace, node.id)

    def _on_release(self, node_id: int) -> None:
        assert self._trace is not None
        self._insert(self._trace, node_id)


class TraceLength(Probabilistic):
    """Favour deep lines (or, ``inverse``, short ones): potential = depth."""

    def __init__(self, temperature: float = 1.0, inverse: bool = False, **options: Any) -> None:
        sign = -1 if inverse else 1
        super().__init__(temperature, lambda trace, node: sign * node.depth, **options)


class SOTABased(Probabilistic):
    """Favour lines that kept improving (``inverse``: the neglected ones).

    Potential = how many nodes on root→leaf beat everything above them.
    """

    def __init__(self, temperature: float = 1.0, inverse: bool = False, **options: Any) -> None:
        sign = -1 if inverse else 1
        super().__init__(temperature, lambda trace, node: sign * node.improvements, **options)


class Random(Probabilistic):
    """Any free leaf, uniformly."""

    def __init__(self, **options: Any) -> None:
        super().__init__(1.0, None, **options)


_EXPAND = -1


class MCTS(Scheduler):
    """Monte Carlo tree search with PUCT: extend any finished node, not only leaves.

    Each finished node gets a reward in [0, 1]: 0 if it failed (or has no metric),
    otherwise its rank among the metrics seen so far, direction-aware, in (0, 1] — so a
    failure never scores above a success, whichever way the metric goes. Rewards back up
    to every ancestor (visits N, total W). From the roots down, each step takes the best
    of Q(c) + c_puct·P·√N(s)/(1 + N(c)) over the children c, or extends s itself, scored
    as a child with s's value Q(s) and s's number of children as its visits. A selection adds a virtual loss
    (a visit with reward 0) along its path until its child's result comes back, so
    parallel workers spread out. ``observe_feedback`` replaces a node's reward.
    """

    def __init__(self, c_puct: float = 1.0, **options: Any) -> None:
        if not (isinstance(c_puct, (int, float)) and c_puct >= 0 and math.isfinite(c_puct)):
            raise SpecError(f"c_puct must be a finite number ≥ 0, got {c_puct!r}")
        self.c_puct = float(c_puct)
        super().__init__(**options)

    def _reset_index(self) -> None:
        self._visits: Counter[int] = Counter()
        self._total: dict[int, float] = {}  # sum of rewards below and at a node (missing: 0)
        self._virtual: Counter[int] = Counter()
        self._reward: dict[int, float] = {}
        self._seen: list[float] = []  # metrics so far, larger = better
        self._in_flight: set[int] = set()  # nodes whose selection holds a virtual loss
        self._queued: dict[int, list[float]] = {}  # node -> [visits, reward] still to back up

    def _reward_of(self, trace: Trace, node: Node) -> float:
        """The reward of a node finishing now (its rank among the metrics so far)."""
        value = trace.value(node)
        if value is None:
            return 0.0
        key = value if trace.maximize else -value
        rank = bisect.bisect_left(self._seen, key)
        bisect.insort(self._seen, key)
        return (rank + 1) / len(self._seen)

    def observe_feedback(self, node: Node, reward: float) -> None:
        """Replace the reward of a finished node (e.g. a reviewer's verdict), in [0, 1]."""
        if not 0 <= reward <= 1:
            raise SpecError(f"reward must be between 0 and 1, got {reward!r}")
        if self._trace is not None:
            self._sync(self._trace)
        if node.id not in self._reward:
            raise ValueError(f"node {node.id} has not finished in the scheduled trace")
        self._queue(node.id, 0, reward - self._reward[node.id])
        self._reward[node.id] = reward
        self._flush()

    def _path(self, node_id: int | None) -> list[int]:
        assert self._trace is not None
        path = []
        while node_id is not None:
            path.append(node_id)
            node_id = self._trace.nodes[node_id].parent
        return path

    def _queue(self, node_id: int, visits: int, reward: float) -> None:
        entry = self._queued.setdefault(node_id, [0, 0.0])
        entry[0] += visits
        entry[1] += reward

    def _flush(self) -> None:
        """Back queued results up to every ancestor, deepest first, merging at shared ancestors.

        Catching up with a whole stored trace so costs O(n log n), not O(n · depth).
        """
        assert self._trace is not None
        nodes = self._trace.nodes
        heap = [(-nodes[n].depth, n) for n in self._queued]
        heapq.heapify(heap)
        while heap:
            _, node_id = heapq.heappop(heap)
            visits, reward = self._queued.pop(node_id)
            self._visits[node_id] += int(visits)
            self._total[node_id] = self._total.get(node_id, 0.0) + reward
            parent = nodes[node_id].parent
            if parent is not None:
                if parent not in self._queued:
                    heapq.heappush(heap, (-nodes[parent].depth, parent))
                self._queue(parent, int(visits), reward)

    def _virtual_loss(self, node_id: int | None, amount: int) -> None:
        for ancestor in self._path(node_id):
            self._virtual[ancestor] += amount

    def _sync(self, trace: Trace) -> None:
        super()._sync(trace)
        self._flush()

    def next(self, trace: Trace) -> Selection | None:
        selection = super().next(trace)
        if selection is not None and selection.parent is not None:
            self._virtual_loss(selection.parent, 1)
        return selection

    def _ranked(self, trace: Trace, node_id: int | None) -> list[tuple[float, int]]:
        """Options at a node, best last: its children, and extending it."""
        children = trace.roots if node_id is None else trace.child_ids(node_id)
        options = len(children) + (node_id is not None)
        prior = 1.0 / max(options, 1)
        if node_id is None:
            visits = sum(self._visits[c] + self._virtual[c] for c in children)
        else:
            visits = self._visits[node_id] + self._virtual[node_id]
        explore = self.c_puct * prior * math.sqrt(max(visits, 1))
        ranked = []
        for child in children:
            n = self._visits[child] + self._virtual[child]
            q = self._total.get(child, 0.0) / n if n else 0.0
            ranked.append((q + explore / (1 + n), child))
        if node_id is not None and trace.nodes[node_id].finished and node_id not in self._pending:
            q = self._total.get(node_id, 0.0) / visits if visits else 0.0
            ranked.append((q + explore / (1 + len(children)), _EXPAND))
        ranked.sort()
        return ranked

    def _choose(self, trace: Trace) -> int | None:
        stack: list[tuple[int | None, list[tuple[float, int]]]] = [(None, self._ranked(trace, None))]
        while stack:
            here, options = stack[-1]
            if not options:
                stack.pop()  # nothing to extend below here (all running or pending)
                continue
            _, choice = options.pop()
            if choice == _EXPAND:
                return here
            stack.append((choice, self._ranked(trace, choice)))
        return None

    def _on_add(self, trace: Trace, node: Node, committed: bool) -> None:
        if committed:
            self._in_flight.add(node.id)

    def _on_finish(self, trace: Trace, node: Node) -> None:
        reward = self._reward_of(trace, node)
        self._reward[node.id] = reward
        self._queue(node.id, 1, reward)
        if node.id in self._in_flight:
            self._in_flight.discard(node.id)
            self._virtual_loss(node.parent, -1)

    def _on_release(self, node_id: int) -> None:
        self._virtual_loss(node_id, -1)
