"""A trivial ``%%sandbox --backend seccomp`` cell, pool warm and pool off, against what a user
would do otherwise: ``subprocess.run([python, "-c", ...])``.

    .venv/bin/python benchmarks/bench_seccomp.py [--runs 60] [--quick] [--json]
    bash scripts/as-user python benchmarks/bench_seccomp.py                               # as jx-user
    bash scripts/as-user python tests/no_namespaces.py python benchmarks/bench_seccomp.py  # ... with no namespaces

The three sides take turns call by call in this process, each after the same pause (a person
types cells seconds apart: the pool refills in the pause, and the raw side waits as long).
The cells go through IPython's magic, the Manager, the store, a confined worker and back;
``pool warm`` is the default pool, ``pool off`` a second Manager with ``pool_size=0`` (a
worker forked for the cell, on the cell's clock). Who runs it decides the namespaces and
cgroups the sandbox gets, so every row names them. Target: warm <= 1.5x.
"""

from __future__ import annotations

import subprocess
import sys

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell, use_manager

CELL = "x = 1"
PAUSE = 0.3  # seconds before every call, on every side
RAW = '`subprocess.run([python, "-c", ...])`'


def main() -> None:
    args = options(__doc__, runs=60, quick_runs=5).parse_args()
    shell = notebook_shell()
    from jupyter_exec import Manager, current_manager
    from jupyter_exec.config import ExecConfig

    warm_manager, cold_manager = current_manager(), Manager(ExecConfig(pool_size=0))

    def cell_on(manager: Manager) -> None:
        use_manager(shell, manager)
        shell.run_cell_magic("sandbox", "--backend seccomp --quiet", CELL)

    def raw() -> None:
        subprocess.run([sys.executable, "-c", CELL], check=True)

    sides = {"raw": raw, "warm": lambda: cell_on(warm_manager), "cold": lambda: cell_on(cold_manager)}
    for side in sides.values():
        side()  # each backend and its template started before the clock
    load = LoadWatch()
    times = interleaved(sides, rounds(args), pause=PAUSE, load=load)
    work = f"a trivial cell, {PAUSE:g} s after the last"
    ours = "`%%sandbox --backend seccomp`, pool"
    rows = [
        pair("cells", "seccomp.warm", work, (f"{ours} warm", times["warm"]), (RAW, times["raw"]), load),
        pair("cells", "seccomp.cold", work, (f"{ours} off", times["cold"]), (RAW, times["raw"]), load),
    ]
    cold_manager.shutdown()
    report(rows, args)


if __name__ == "__main__":
    main()
