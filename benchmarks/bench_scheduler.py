"""Median ``next()`` time of each scheduler on a 100,000-node trace.

    .venv/bin/python benchmarks/bench_scheduler.py [--nodes 100000] [--calls 2000]

Three shapes: ``bushy`` (each node under a uniformly random earlier node: depth ~20,
many leaves), ``lines`` (8 roots, each node under the newest node of a random line or,
one time in ten, under a random node of it: long chains with short side branches) and
``chain`` (the last of 8 roots grows one line ~100,000 deep, scores rising: a
hill-climb that never branched, the worst case for MCTS's descent). 5 % of the nodes fail.
Each timed ``next()`` is followed by an untimed ``release`` so the trace stays the same;
the first call, which indexes the whole trace once, is reported apart as "catch-up". Target: median ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from jupyter_exec.trace import MCTS, Probabilistic, Random, RoundRobin, SOTABased, Trace, TraceLength
from jupyter_exec.trace.model import Node

SCHEDULERS = {
    "RoundRobin": lambda: RoundRobin(max_trace_num=8),
    "Probabilistic(depth/7)": lambda: Probabilistic(1.0, lambda t, n: n.depth // 7, max_trace_num=8),
    "TraceLength": lambda: TraceLength(1.0, max_trace_num=8),
    "TraceLength(inverse)": lambda: TraceLength(1.0, inverse=True, max_trace_num=8),
    "SOTABased": lambda: SOTABased(1.0, max_trace_num=8),
    "SOTABased(inverse)": lambda: SOTABased(1.0, inverse=True, max_trace_num=8),
    "Random": lambda: Random(max_trace_num=8),
    "MCTS": lambda: MCTS(1.0, max_trace_num=8),
}


def build(shape: str, size: int, rng: random.Random) -> Trace:
    trace = Trace("bench")
    lines: list[list[int]] = []
    for node_id in range(1, size + 1):
        if node_id <= 8:
            parent = None
            lines.append([node_id])
        elif shape == "bushy":
            parent = rng.randint(1, node_id - 1)
        elif shape == "chain":
            parent = node_id - 1
        else:
            line = rng.choice(lines)
            parent = line[-1] if rng.random() < 0.9 else rng.choice(line)
            line.append(node_id)
        trace.add(Node(node_id, parent, ""))
        failed = rng.random() < 0.05
        score = node_id + rng.random() * 1000 if shape == "chain" else rng.random()
        trace.finish(node_id, "failed" if failed else "succeeded", {} if failed else {"score": score})
    return trace


def measure(trace: Trace, make, calls: int) -> tuple[float, float, float]:
    scheduler = make()
    start = time.perf_counter()
    scheduler.release(scheduler.next(trace))
    catch_up = time.perf_counter() - start
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        selection = scheduler.next(trace)
        times.append(time.perf_counter() - start)
        scheduler.release(selection)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99)] * 1e3, catch_up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--shapes", default="bushy,lines,chain")
    options = parser.parse_args()
    for shape in options.shapes.split(","):
        trace = build(shape, options.nodes, random.Random(0))
        depth = max(n.depth for n in trace.nodes.values())
        print(f"\n{shape}: {len(trace):,} nodes, {len(trace.leaves()):,} leaves, depth {depth}")
        print(f"{'scheduler':<24}{'median ms':>10}{'p99 ms':>9}{'catch-up s':>12}")
        for name, make in SCHEDULERS.items():
            median, p99, catch_up = measure(trace, make, options.calls)
            print(f"{name:<24}{median:>10.4f}{p99:>9.4f}{catch_up:>12.2f}")


if __name__ == "__main__":
    main()
