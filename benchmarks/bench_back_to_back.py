"""Cells back to back: N trivial ``%%sandbox`` cells in a row against N runs of the raw tool, each
side's clock running until the work it deferred is done.

    .venv/bin/python benchmarks/bench_back_to_back.py                        # seccomp (200) and container (40)
    .venv/bin/python benchmarks/bench_back_to_back.py --backend seccomp --cells 200
    bash scripts/as-user python benchmarks/bench_back_to_back.py --backend seccomp   # as jx-user

Nothing waits between cells: each starts the moment the one before it returns, as when a
notebook is re-run top to bottom or a loop calls the magic. The cells go through IPython's
magic, the Manager, the store and a fresh sandbox each, with the default pool settings; the raw
tool is ``subprocess.run([python, "-c", ...])`` for seccomp and the engine's own ``run --rm
--network none IMAGE python3 -c ...`` for containers. A side's clock stops when its last run
has returned *and* what it left to do in the background is done (the pool full again, every
used container removed), so no deferred work lands on the other side's clock; the two sides'
blocks take turns. Each row gives the time per cell. Targets: seccomp <= 1.0x, container <= 0.2x.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, Sample, interleaved, notebook_shell

CELL = "x = 1"
RAW = '`subprocess.run([python, "-c", ...])`'
DEFAULT_CELLS = {"seccomp": 200, "container": 40}


def raw_command(manager: Any, backend: str) -> list[str]:
    """The raw tool doing what a trivial cell does."""
    if backend == "seccomp":
        return [sys.executable, "-c", CELL]
    container = manager.backend("container")
    cli = shutil.which(container.engine.facts.kind)
    if cli is None:
        raise SystemExit(f"the {container.engine.facts.kind} CLI is needed for the raw side: install it")
    return [cli, "run", "--rm", "--network", "none", container.settings.image, "python3", "-c", CELL]


def settled(manager: Any, backend: str) -> Callable[[], bool]:
    """Whether the backend has finished what its cells left to do: its pool full, nothing being
    made, and (containers) no container of this process but the warm ones."""
    pool = manager.backend(backend).pool
    if backend == "seccomp":
        return lambda: pool.idle_count() >= pool.size
    api = manager.backend(backend).engine.client.api
    mine = {"label": f"jupyter-exec.owner-pid={os.getpid()}"}

    def done() -> bool:
        idle = pool.idle_count()
        return pool.ahead_count() == idle >= pool.size and len(api.containers(all=True, filters=mine)) == idle

    return done


def block(step: Callable[[], object], n: int, done: Callable[[], bool] = lambda: True) -> Callable[[], None]:
    """``step`` ``n`` times in a row, then until ``done``."""

    def run() -> None:
        for _ in range(n):
            step()
        while not done():
            time.sleep(0.01)

    return run


def main() -> None:
    parser = options(__doc__, runs=3, quick_runs=1)
    parser.add_argument("--backend", choices=("seccomp", "container", "docker"), action="append")
    parser.add_argument(
        "--cells", type=int, help="cells per side (default 200 seccomp, 40 container; a tenth with --quick)"
    )
    args = parser.parse_args()
    shell = notebook_shell()
    from jupyter_exec import current_manager
    from jupyter_exec.backends.names import canonical

    manager = current_manager()
    rows = []
    for backend in dict.fromkeys(canonical(name) for name in args.backend or ("seccomp", "container")):
        n = args.cells or DEFAULT_CELLS[backend] // (10 if args.quick else 1)
        line = f"--backend {backend} --quiet"
        command = raw_command(manager, backend)

        def cell(line: str = line) -> None:
            shell.run_cell_magic("sandbox", line, CELL)

        def raw(command: list[str] = command) -> None:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

        raw()
        cell()  # the backend, its pool and its template started before the clock
        load = LoadWatch()
        sides = {"cells": block(cell, n, settled(manager, backend)), "raw": block(raw, n)}
        blocks = interleaved(sides, rounds(args), load=load)
        per_cell = {side: Sample(tuple(t / n for t in sample.times_ms)) for side, sample in blocks.items()}
        shown = RAW if backend == "seccomp" else f"`{os.path.basename(command[0])} run --rm`"
        rows.append(
            pair(
                "back-to-back",
                f"back-to-back.{backend}",
                f"{n} trivial cells back to back, per cell, until the deferred work is done",
                (f"`%%sandbox --backend {backend}`", per_cell["cells"]),
                (shown, per_cell["raw"]),
                load,
            )
        )
    report(rows, args)


if __name__ == "__main__":
    main()
