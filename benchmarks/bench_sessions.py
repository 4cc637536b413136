"""Sandbox sessions: the fork of a 200 MB state, and a later cell in a session against a one-shot cell.

    .venv/bin/python benchmarks/bench_sessions.py [--runs 20] [--state 200]
    bash scripts/as-user python benchmarks/bench_sessions.py        # as jx-user

A session (``%%sandbox --backend seccomp --session A``) builds a state of ``--state`` MB of
touched memory; ``%jx fork A Bn`` is timed (the kernel's whole path: the wait for A's turn,
the copy of its scratch directory, the fork of its process, the fork's cgroup), each fork
ended untimed before the next. Target: the fork of 200 MB within 50 ms. A later cell in a
session (its state kept) is timed against a one-shot cell on a warm pool, through the magic.
"""

from __future__ import annotations

import argparse
import itertools
import os

from timing import median_ms, notebook_shell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--state", type=int, default=200, help="MB of state the session holds")
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


if __name__ == "__main__":
    main()
