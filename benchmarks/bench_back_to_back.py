"""Cells back to back: N trivial ``%%sandbox`` cells in a row against N runs of the raw tool.

    .venv/bin/python benchmarks/bench_back_to_back.py                        # seccomp (200) and container (40)
    .venv/bin/python benchmarks/bench_back_to_back.py --backend seccomp --cells 200
    bash scripts/as-user python benchmarks/bench_back_to_back.py --backend seccomp   # as jx-user

Unlike ``bench_seccomp.py`` and ``bench_container.py``, nothing waits between cells: each
cell starts the moment the one before it returns, as when a notebook is re-run top to
bottom or a loop calls the magic. Both sides run in this process, on this machine: the
cells through IPython's magic, the Manager, the store and a fresh sandbox each; the raw
tool is ``subprocess.run([python, "-c", ...])`` for seccomp and the engine's own ``run --rm
--network none IMAGE python3 -c ...`` (``docker`` or ``podman``, the engine the container
backend picks) for containers. So that both sides see the same load from whatever else the
machine runs, they take turns in blocks (``--block`` cells back to back, then as many raw
runs); each side's total is divided by N. Targets: seccomp <= 1.0x, container <= 0.2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from timing import notebook_shell

CELL = "x = 1"
TARGETS = {"seccomp": 1.0, "container": 0.2}
DEFAULT_CELLS = {"seccomp": 200, "container": 40}


def per_item_ms(sides: list[Callable[[], None]], n: int, block: int) -> list[float]:
    """Each side called ``n`` times, in turns of ``block`` calls in a row; each side's wall time
    per call (ms)."""
    totals = [0.0] * len(sides)
    for start in range(0, n, block):
        for index, side in enumerate(sides):
            began = time.perf_counter()
            for _ in range(min(block, n - start)):
                side()
            totals[index] += time.perf_counter() - began
    return [total / n * 1000 for total in totals]


def raw_command(manager: Any, backend: str) -> list[str]:
    """The raw tool doing what a trivial cell does."""
    if backend == "seccomp":
        return [sys.executable, "-c", CELL]
    container = manager.backend("container")
    cli = shutil.which(container.engine.facts.kind)
    if cli is None:
        raise SystemExit(f"the {container.engine.facts.kind} CLI is needed for the reference figure")
    return [cli, "run", "--rm", "--network", "none", container.settings.image, "python3", "-c", CELL]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("seccomp", "container"), action="append")
    parser.add_argument("--cells", type=int, help="cells per side (default: 200 seccomp, 40 container)")
    parser.add_argument("--block", type=int, default=20, help="cells (and raw runs) in a row per turn")
    args = parser.parse_args()
    shell = notebook_shell()
    from jupyter_exec import current_manager

    manager = current_manager()
    print(f"uid {os.getuid()}, load average {os.getloadavg()[0]:.1f}")
    for backend in args.backend or ("seccomp", "container"):
        n = args.cells or DEFAULT_CELLS[backend]
        line = f"--backend {backend} --quiet"

        def cell(line: str = line) -> None:
            shell.run_cell_magic("sandbox", line, CELL)

        command = raw_command(manager, backend)

        def raw(command: list[str] = command) -> None:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

        raw()
        cell()  # the backend, its pool and its template started before the clock
        cells_ms, raw_ms = per_item_ms([cell, raw], n, min(args.block, n))
        ratio = cells_ms / raw_ms
        print(
            f"{backend}: {n} cells back to back {cells_ms:7.1f} ms/cell, {' '.join(command[:2])}"
            f" ... {raw_ms:7.1f} ms/run, ratio {ratio:.2f}x (target <= {TARGETS[backend]}x)"
        )


if __name__ == "__main__":
    main()
