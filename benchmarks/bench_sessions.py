"""Sandbox sessions: the fork of a 200 MB state, and a later cell in a session against a one-shot cell.

    .venv/bin/python benchmarks/bench_sessions.py [--runs 20] [--state 200]
    bash scripts/as-user python benchmarks/bench_sessions.py        # as jx-user

A session (``%%sandbox --backend seccomp --session A``) builds a state of ``--state`` MB of
touched memory; ``%jx fork A Bn`` is timed (the kernel's whole path: the wait for A's turn,
the copy of its scratch directory, the fork of its process, the fork's cgroup), each fork
ended untimed before the next. Target: the fork of 200 MB within 50 ms. A later cell in a
session (its state kept) is timed against a one-shot cell on a warm pool, through the magic.
Then ``explore`` grows a tree of ``--nodes`` nodes whose root cell takes 2 s to build its
state, once from states (each child in a fork of its parent) and once without (each child
runs its ancestors' cells again, as it must from a fresh sandbox): the time saved.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

from timing import median_ms, notebook_shell

from jupyter_exec.manager import Manager
from jupyter_exec.trace.model import Node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--state", type=int, default=200, help="MB of state the session holds")
    parser.add_argument("--nodes", type=int, default=6, help="nodes of the explored tree")
    args = parser.parse_args()
    shell = notebook_shell()
    from jupyter_exec import current_manager
    from jupyter_exec.backends.process.guarantees import guarantees

    manager = current_manager()
    host = guarantees(confined=True)
    spaces = "user namespace" if host.namespaces.user else "namespaces" if host.namespaces.available else "none"
    print(
        f"uid {os.getuid()}, namespaces: {spaces}, cgroup: {host.cgroup.kind or 'none'}, load {os.getloadavg()[0]:.1f}"
    )
    build = f"state = bytearray({args.state} * 1024**2)\nstate[::4096] = b'x' * len(state[::4096])"
    shell.run_cell_magic("sandbox", f"--backend seccomp --quiet --session A --mem {args.state * 3}m", build)
    names = (f"B{i}" for i in itertools.count())
    made: list[str] = []

    def fork() -> None:
        made.append(next(names))
        manager.fork_session("A", made[-1])

    def end_last() -> None:
        if made:
            manager.end_session(made.pop())

    forked = median_ms(fork, args.runs, between=end_last)
    end_last()
    in_session = median_ms(
        lambda: shell.run_cell_magic("sandbox", "--backend seccomp --quiet --session A", "x = 1"), args.runs
    )
    one_shot = median_ms(lambda: shell.run_cell_magic("sandbox", "--backend seccomp --quiet", "x = 1"), args.runs)
    manager.end_session("A")
    print(f"%jx fork of a {args.state} MB session:       {forked:7.1f} ms   (target <= 50 ms)")
    print(f"a later cell in a session:              {in_session:7.1f} ms")
    print(f"a one-shot cell (warm pool):            {one_shot:7.1f} ms")
    with_states, without = (tree_seconds(manager, args.nodes, from_state) for from_state in (True, False))
    print(f"explore, {args.nodes} nodes, a 2 s root, from states: {with_states:7.1f} s")
    saved = without - with_states
    print(f"explore, {args.nodes} nodes, each from scratch:      {without:7.1f} s   saved {saved:.1f} s")


ROOT = "import time\ntime.sleep(2)\nbase = 1\n"


def tree_seconds(manager: Manager, nodes: int, from_state: bool) -> float:
    """Wall time of ``explore`` growing ``nodes`` nodes (a chain under RoundRobin) on seccomp."""
    from jupyter_exec import explore
    from jupyter_exec.trace.schedulers import RoundRobin

    def propose(parent: Node | None) -> str:
        if parent is None:
            return ROOT + "{'score': base}"
        step = f"base += {len(parent.code)}\n"
        ancestors = "" if from_state else parent.code.rsplit("{'score'", 1)[0]
        return ancestors + step + "{'score': base}"

    started = time.perf_counter()
    explore(
        propose,
        budget=nodes,
        backend="seccomp",
        scheduler=RoundRobin(),
        from_state=from_state,
        trace=f"bench-{from_state}-{time.time()}",
        manager=manager,
        progress=False,
    )
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
