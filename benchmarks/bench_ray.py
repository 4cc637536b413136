"""``%%rayrun`` and ``jupyter_exec.map`` against raw Ray, on the same local Ray.

    .venv/bin/python benchmarks/bench_ray.py [--runs 200] [--items 1000] [--load 0.5]

1. A trivial cell through IPython's magic, the Manager, the store and a Ray task and
   back, against ``ray.get(f.remote())``. Target ≤ 1.5×.
2. 1,000 small items through ``jupyter_exec.map`` against
   ``ray.get([f.remote(x) for x in xs])``. Target ≤ 1.2×.

Both sides are timed in turn, call by call, so machine load hits both alike.
``--load D`` adds ordinary load while timing: one busy process per core, busy a fraction
D of every 20 ms (0.5 on 2 cores keeps the load average near 1; 0.8 near 1.6), so the
ratio is measured as on a machine that is doing other work, not only on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator

from timing import median_ms, notebook_shell, paired_medians_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--load", type=float, default=0.0, help="busy fraction of one process per core (0: none)")
    args = parser.parse_args()
    os.environ["JX_RAY_ADDRESS"] = ""
    shell = notebook_shell()
    shell.run_cell_magic("rayrun", "--quiet", "1")  # starts the embedded local Ray once

    import ray

    import jupyter_exec

    @ray.remote
    def trivial() -> int:
        return 1

    @ray.remote
    def double(x: int) -> int:
        return 2 * x

    def cell() -> None:
        shell.run_cell_magic("rayrun", "--quiet", "x = 1")

    for _ in range(20):  # warm both paths' workers
        cell()
        ray.get(trivial.remote())
    with busy(args.load):
        cell_median, raw_median = paired_medians_ms(cell, lambda: ray.get(trivial.remote()), args.runs)
        load_average = os.getloadavg()[0]
    cell_cpu, raw_cpu = (thread_cpu_ms(fn, args.runs) for fn in (cell, lambda: ray.get(trivial.remote())))
    print(
        f"trivial cell: %%rayrun {cell_median:.2f} ms, ray.get(f.remote()) {raw_median:.2f} ms, "
        f"ratio {cell_median / raw_median:.2f} (target <= 1.5; --load {args.load:g}, "
        f"load average {load_average:.1f}); the kernel's own CPU per call: {cell_cpu:.2f} ms vs {raw_cpu:.2f} ms"
    )

    xs = list(range(args.items))
    map_ms, raw_map_ms = [], []
    for _ in range(5):
        map_ms.append(median_ms(lambda: jupyter_exec.map(lambda x: 2 * x, xs, backend="ray", progress=False), 1))
        raw_map_ms.append(median_ms(lambda: ray.get([double.remote(x) for x in xs]), 1))
    map_median, raw_map_median = sorted(map_ms)[2], sorted(raw_map_ms)[2]
    print(
        f"{args.items} items: jupyter_exec.map {map_median:.1f} ms, raw ray.get([f.remote(x)...]) "
        f"{raw_map_median:.1f} ms, ratio {map_median / raw_map_median:.2f} (target <= 1.2)"
    )


def thread_cpu_ms(fn: Callable[[], object], runs: int) -> float:
    """CPU time of the calling thread per call of ``fn``, in milliseconds: the work the kernel
    itself does, which a busy machine stretches (waiting for Ray is not counted)."""
    start = time.thread_time()
    for _ in range(runs):
        fn()
    return (time.thread_time() - start) / runs * 1000


@contextlib.contextmanager
def busy(duty: float) -> Iterator[None]:
    """One process per core, busy ``duty`` of every 20 ms, while the block runs."""
    if duty <= 0:
        yield
        return
    spawn = multiprocessing.get_context("spawn")  # fresh processes: nothing of Ray's in them
    stop = spawn.Event()
    workers = [spawn.Process(target=_spin, args=(duty, stop), daemon=True) for _ in range(os.cpu_count() or 1)]
    for worker in workers:
        worker.start()
    time.sleep(3)  # let the load settle
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(5)


def _spin(duty: float, stop: multiprocessing.synchronize.Event) -> None:
    period = 0.02
    while not stop.is_set():
        until = time.perf_counter() + duty * period
        while time.perf_counter() < until:
            pass
        time.sleep((1 - duty) * period)


if __name__ == "__main__":
    main()
