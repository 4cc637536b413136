"""Median wall time of a trivial ``%%sandbox --backend seccomp`` cell against a bare subprocess.

    .venv/bin/python benchmarks/bench_seccomp.py [--runs 40]
    bash scripts/as-user python benchmarks/bench_seccomp.py                             # as jx-user
    bash scripts/as-user python tests/no_namespaces.py python benchmarks/bench_seccomp.py  # ... with no namespaces

Both are measured in this run on this machine, by whoever runs it (the first line says who,
and the namespaces and cgroups the sandbox gets). The cell goes through IPython's magic,
the Manager, the store, a confined worker and back. ``pool warm`` waits for the pool
to refill between cells (cells typed by a person are seconds apart); ``no pool`` starts a
worker per cell. Target: warm ≤ 1.5× ``subprocess.run([python, "-c", ...])``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from timing import median_ms, notebook_shell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    runs = parser.parse_args().runs
    shell = notebook_shell()
    from jupyter_exec import current_manager

    manager = current_manager()

    def cell() -> None:
        shell.run_cell_magic("sandbox", "--backend seccomp --quiet", "x = 1")

    def pool_ready() -> None:
        pool = manager.backend("seccomp").pool
        while pool.idle_count() < pool.size:
            time.sleep(0.005)
        time.sleep(0.05)

    from jupyter_exec.backends.process.guarantees import guarantees

    host = guarantees(confined=True)
    spaces = "user namespace" if host.namespaces.user else "namespaces" if host.namespaces.available else "none"
    print(f"uid {os.getuid()}, namespaces: {spaces}, cgroup: {host.cgroup.kind or 'none'}")
    raw = median_ms(lambda: subprocess.run([sys.executable, "-c", "x = 1"], check=True), runs)
    cell()
    warm = median_ms(cell, runs, between=pool_ready)
    manager.shutdown()
    manager.config.pool_size = 0
    cold = median_ms(cell, runs)
    print(f"subprocess.run([python, -c]):         {raw:7.1f} ms")
    print(f"%%sandbox --backend seccomp, warm:    {warm:7.1f} ms   ratio {warm / raw:.2f}x  (target <= 1.5x)")
    print(f"%%sandbox --backend seccomp, no pool: {cold:7.1f} ms   ratio {cold / raw:.2f}x")


if __name__ == "__main__":
    main()
