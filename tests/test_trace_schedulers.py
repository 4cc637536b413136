"""Schedulers: the distribution each one draws from, fairness, pending selections, MCTS."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_exec.errors import SpecError
from jupyter_exec.trace import MCTS, Probabilistic, Random, RoundRobin, SOTABased, Trace, TraceLength
from jupyter_exec.trace.model import Node
from jupyter_exec.trace.schedulers import softmax

ALL = [
    RoundRobin,
    Random,
    lambda **o: Probabilistic(0.5, lambda t, n: n.id % 3, **o),
    lambda **o: TraceLength(1.0, **o),
    lambda **o: TraceLength(1.0, inverse=True, **o),
    lambda **o: SOTABased(1.0, **o),
    lambda **o: MCTS(1.0, **o),
]
IDS = ["round-robin", "random", "probabilistic", "trace-length", "trace-length-inverse", "sota", "mcts"]


class Grower:
    """Builds a trace node by node, as explore does."""

    def __init__(self, maximize: bool = True) -> None:
        self.trace = Trace("t", "score", maximize)
        self.ids = itertools.count(1)

    def add(self, parent: int | None) -> int:
        return self.trace.add(Node(next(self.ids), parent, "code")).id

    def finish(self, node_id: int, score: float | None) -> int:
        if score is None:
            self.trace.finish(node_id, "failed", error="boom")
        else:
            self.trace.finish(node_id, "succeeded", {"score": score})
        return node_id

    def grow(self, parent: int | None, score: float | None = 1.0) -> int:
        return self.finish(self.add(parent), score)


def test_softmax_is_stable_and_rejects_bad_temperatures():
    assert softmax([1000.0, 1000.0 + math.log(3)]) == pytest.approx([0.25, 0.75])
    assert softmax([-1e300, 0.0]) == pytest.approx([0.0, 1.0])
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(SpecError):
            softmax([1.0], bad)
        with pytest.raises(SpecError):
            Probabilistic(bad)
    with pytest.raises(SpecError):
        RoundRobin(max_trace_num=0)


@pytest.mark.parametrize("inverse", [False, True])
def test_probabilistic_frequencies_match_the_softmax(inverse):
    g = Grower()
    root = g.grow(None)
    # leaves at depths 1, 2, 3, 4 (two at depth 2): a chain with a side leaf at each level
    chain = root
    leaves = []
    for depth in range(1, 5):
        leaves.append(g.grow(chain))
        if depth < 4:
            chain = g.grow(chain)
    leaves.append(g.grow(chain))
    temperature = 1.5
    scheduler = TraceLength(temperature, inverse=inverse, seed=7)
    draws = 40_000
    counts: Counter[int] = Counter()
    for _ in range(draws):
        selection = scheduler.next(g.trace)
        counts[selection.parent] += 1
        scheduler.release(selection)
    assert set(counts) == set(leaves)
    sign = -1 if inverse else 1
    expected = softmax([sign * g.trace.nodes[n].depth for n in leaves], temperature)
    for node_id, p in zip(leaves, expected, strict=False):
        sigma = math.sqrt(p * (1 - p) / draws)
        assert abs(counts[node_id] / draws - p) < 4 * sigma, (node_id, counts[node_id] / draws, p)


@settings(max_examples=50, deadline=None)
@given(width=st.integers(1, 8), steps=st.integers(0, 120), fail_every=st.integers(2, 7))
def test_round_robin_is_fair_across_branches(width, steps, fail_every):
    g = Grower()
    root = g.grow(None)
    branches = [g.grow(root) for _ in range(width)]
    branch_of = {b: b for b in branches}
    scheduler = RoundRobin()
    turns: Counter[int] = Counter({b: 0 for b in branches})
    for step in range(steps):
        selection = scheduler.next(g.trace)
        branch = branch_of[selection.parent]
        turns[branch] += 1
        branch_of[g.grow(selection.parent, None if step % fail_every == 0 else 1.0)] = branch
    assert max(turns.values()) - min(turns.values()) <= 1
    assert sum(turns.values()) == steps


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_failed_selection_is_released(make):
    g = Grower()
    root = g.grow(None)
    scheduler = make()
    selection = scheduler.next(g.trace)
    assert selection.parent == root
    assert scheduler.next(g.trace) is None  # the only candidate is in flight
    scheduler.release(selection)  # its run died before a node was recorded
    assert scheduler.pending == frozenset()
    assert scheduler.next(g.trace).parent == root
    # a run that died after its node was recorded: the node fails, nothing stays pending
    child = g.add(root)
    scheduler.observe(g.trace.nodes[child])
    g.finish(child, None)
    scheduler.observe(g.trace.nodes[child])
    assert scheduler.pending == frozenset()
    assert scheduler.next(g.trace) is not None


@pytest.mark.parametrize("make", ALL, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from("nncfr"), st.integers(0, 10**6), st.booleans()), max_size=120),
    roots=st.integers(1, 3),
)
def test_no_node_is_handed_out_twice_while_pending(make, ops, roots):
    g = Grower()
    scheduler = make(max_trace_num=roots, seed=1)
    pending: list = []  # selections handed out, no node yet
    running: list[int] = []
    for op, pick, ok in ops:
        if op == "n":
            selection = scheduler.next(g.trace)
            if selection is None:
                continue
            assert selection.parent not in {s.parent for s in pending if s.parent is not None}
            if selection.parent is None:
                assert len(g.trace.roots) + sum(s.new_root for s in pending) < roots
            else:
                node = g.trace.nodes[selection.parent]
                assert node.finished
                if not isinstance(scheduler, MCTS):
                    assert g.trace.is_leaf(node.id)
            pending.append(selection)
        elif op == "c" and pending:
            running.append(g.add(pending.pop(pick % len(pending)).parent))
        elif op == "f" and running:
            node_id = running.pop(pick % len(running))
            g.finish(node_id, (pick % 97) / 7 if ok else None)
            scheduler.observe(g.trace.nodes[node_id])
        elif op == "r" and pending:
            scheduler.release(pending.pop(pick % len(pending)))
    for selection in pending:
        scheduler.release(selection)
    for node_id in running:
        g.finish(node_id, 1.0)
        scheduler.observe(g.trace.nodes[node_id])
    assert scheduler.pending == frozenset() and scheduler._pending_roots == 0  # nothing leaked
    if isinstance(scheduler, MCTS):
        assert not any(scheduler._virtual.values())


@pytest.mark.parametrize("maximize", [True, False])
def test_mcts_concentrates_on_the_better_branch(maximize):
    g = Grower(maximize)
    good_sign = 1 if maximize else -1
    root = g.grow(None, 0.0)
    good, bad = g.grow(root, 0.0), g.grow(root, 0.0)
    branch_of = {good: "good", bad: "bad", root: "root"}
    rng = random.Random(3)
    scheduler = MCTS(1.0, seed=3)
    visits: Counter[str] = Counter()
    for _ in range(300):
        selection = scheduler.next(g.trace)
        branch = branch_of[selection.parent]
        visits[branch] += 1
        level = {"good": 1.0, "bad": -1.0}.get(branch, 0.0)  # new children of the root: middling
        child = g.grow(selection.parent, good_sign * (level + rng.gauss(0, 0.3)))
        branch_of[child] = "other" if branch == "root" else branch
    assert visits["good"] > 0.8 * 300 and visits["bad"] < 10, visits


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=30), maximize=st.booleans(), failures=st.integers(1, 5)
)
def test_mcts_failure_never_scores_above_success(scores, maximize, failures):
    g = Grower(maximize)
    scheduler = MCTS(max_trace_num=100)
    nodes = [g.grow(None, s) for s in scores] + [g.grow(None, None) for _ in range(failures)]
    scheduler.next(g.trace)
    rewards = {n: scheduler._reward[n] for n in nodes}
    worst_success = min(rewards[n] for n in nodes[: len(scores)])
    assert all(rewards[n] < worst_success for n in nodes[len(scores) :])
    assert all(0 <= r <= 1 for r in rewards.values())


def test_mcts_virtual_loss_spreads_parallel_workers_and_feedback_steers():
    g = Grower()
    root = g.grow(None, 0.0)
    a, b = g.grow(root, 1.0), g.grow(root, 1.0)
    scheduler = MCTS(2.0, seed=0)
    first = scheduler.next(g.trace)
    second = scheduler.next(g.trace)
    assert first.parent != second.parent
    for selection in (first, second):
        scheduler.release(selection)
    assert sum(scheduler._virtual.values()) == 0
    scheduler.observe_feedback(g.trace.nodes[a], 1.0)
    scheduler.observe_feedback(g.trace.nodes[b], 0.0)
    picks = Counter()
    for _ in range(20):
        selection = scheduler.next(g.trace)
        picks[selection.parent] += 1
        scheduler.release(selection)
    assert picks[a] > picks[b]
    with pytest.raises(SpecError):
        scheduler.observe_feedback(g.trace.nodes[a], 1.5)


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_new_roots_first_up_to_max_trace_num_and_reset(make):
    g = Grower()
    scheduler = make(max_trace_num=3)
    selections = [scheduler.next(g.trace) for _ in range(4)]
    assert [s.new_root for s in selections[:3]] == [True] * 3 and selections[3] is None
    scheduler.reset()
    assert scheduler.next(g.trace).new_root


def test_random_covers_every_free_leaf():
    g = Grower()
    root = g.grow(None)
    leaves = {g.grow(root) for _ in range(4)}
    scheduler = Random(seed=5)
    seen = set()
    for _ in range(200):
        selection = scheduler.next(g.trace)
        seen.add(selection.parent)
        scheduler.release(selection)
    assert seen == leaves
