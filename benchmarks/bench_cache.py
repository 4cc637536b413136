"""A cell served from the cache of identical runs (``--cache``) against the same cell run.

    .venv/bin/python benchmarks/bench_cache.py [--runs 50]

The cell brings a value in and two back and prints a line, through IPython's magic, the
Manager and the store. ``run`` is the cell without ``--cache`` (a fresh seccomp worker
each time, the pool kept warm between runs as in ``bench_seccomp.py``); ``hit`` is the
same cell with ``--cache`` once it is in the cache: nothing starts, the stored output is
shown and the values are bound. The raw tool is ``subprocess.run([python, "-c", ...])``.
Target: a hit under 5 ms at the median.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from timing import median_ms, notebook_shell

CELL = "print('rows', len(x))\ny, z = sum(x), max(x)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    shell = notebook_shell()
    shell.user_ns["x"] = list(range(1000))
    from jupyter_exec import current_manager

    pool = current_manager().backend("seccomp").pool

    def pool_ready() -> None:
        while pool.idle_count() < pool.size:
            time.sleep(0.005)

    def cell(options: str) -> None:
        shell.run_cell_magic("sandbox", f"--backend seccomp --quiet --in x --out y,z {options}", CELL)

    script = f"x = list(range(1000))\n{CELL}"
    raw = median_ms(lambda: subprocess.run([sys.executable, "-c", script], check=True, stdout=subprocess.DEVNULL), runs)
    cell("")
    run = median_ms(lambda: cell(""), runs, between=pool_ready)
    cell("--cache")
    hit = median_ms(lambda: cell("--cache"), runs)
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"subprocess.run([python, -c]):        {raw:7.2f} ms")
    print(f"%%sandbox --backend seccomp:         {run:7.2f} ms   ratio {run / raw:.2f}x")
    print(f"%%sandbox --backend seccomp --cache: {hit:7.2f} ms   ratio {hit / raw:.3f}x  (a hit; target < 5 ms)")


if __name__ == "__main__":
    main()
