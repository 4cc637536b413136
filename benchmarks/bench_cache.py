"""A cell served from the cache of identical runs (``--cache``) against the same cell run, and that
run against ``subprocess.run([python, "-c", ...])`` of the same code.

    .venv/bin/python benchmarks/bench_cache.py [--runs 40] [--quick] [--json]

The cell brings a 1,000-item list in and two values back and prints a line, through IPython's
magic, the Manager and the store, on the seccomp backend with its default pool. ``hit`` is the
cell with ``--cache`` once it is in the cache: nothing starts, the stored output is shown and
the values are bound; ``run`` is the same cell without ``--cache``. The three take turns call by
call, each after the same pause. Target: a hit under 5 ms at the median.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell

CELL = "print('rows', len(x))\ny, z = sum(x), max(x)"
PAUSE = 0.3
UNCACHED = "the same cell, not cached"


def main() -> None:
    args = options(__doc__, runs=40, quick_runs=5).parse_args()
    shell = notebook_shell()
    shell.user_ns["x"] = list(range(1000))

    def cell(more: str = "") -> None:
        shell.run_cell_magic("sandbox", f"--backend seccomp --quiet --in x --out y,z {more}", CELL)

    script = f"x = list(range(1000))\n{CELL}"
    sides: dict[str, Callable[[], object]] = {
        "raw": lambda: subprocess.run([sys.executable, "-c", script], check=True, stdout=subprocess.DEVNULL),
        "run": cell,
        "hit": lambda: cell("--cache"),
    }
    for side in sides.values():
        side()  # the backend started; the cell in the cache
    load = LoadWatch()
    times = interleaved(sides, rounds(args), pause=PAUSE, load=load)
    work = "a cell with a 1,000-item `--in` list, two `--out` values and a line of output"
    rows = [
        pair("cells", "cache.hit", work, ("`%%sandbox --cache`, a hit", times["hit"]), (UNCACHED, times["run"]), load),
        pair(
            "cells",
            "cache.run",
            work,
            ("`%%sandbox --backend seccomp`, pool warm", times["run"]),
            ('`subprocess.run([python, "-c", ...])`', times["raw"]),
            load,
        ),
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
