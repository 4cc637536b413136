"""``%%rayrun`` and ``jupyter_exec.map`` against raw Ray doing the same work, on the same local Ray.

    .venv/bin/python benchmarks/bench_ray.py [--runs 300] [--items 1000] [--load 0.5] [--quick] [--json]

1. A trivial cell through IPython's magic, the Manager, the store and a Ray task and back,
   against ``ray.get(f.remote())``. Target <= 1.5x. The kernel's own CPU per call (thread CPU
   time: the work a busy machine stretches; waiting for Ray is not counted) is printed too.
2. ``jupyter_exec.map`` of a small function over ``--items`` items against the same function
   through ``ray.get`` on batches of the same size (``map``'s default: about four batches per
   CPU of the cluster), one task per batch. Target <= 1.2x.

Both pairs are timed in turn, call by call (a whole map per call), so machine load hits both
alike. ``--load D`` adds ordinary load while timing: one busy process per core, busy a fraction
D of every 20 ms (0.5 on 2 cores keeps the load average near 1; 0.8 near 1.6), so the ratio is
measured as on a machine that is doing other work, not only on a quiet one.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell


def main() -> None:
    parser = options(__doc__, runs=300, quick_runs=20)
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
    def doubled(xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    def cell() -> None:
        shell.run_cell_magic("rayrun", "--quiet", "x = 1")

    def raw() -> None:
        ray.get(trivial.remote())

    xs = list(range(args.items))
    batch = max(1, math.ceil(len(xs) / (int(ray.cluster_resources().get("CPU", 1)) * 4)))

    def mapped() -> None:
        jupyter_exec.map(lambda x: 2 * x, xs, backend="ray", batch_size=batch, progress=False)

    def raw_map() -> None:
        ray.get([doubled.remote(xs[start : start + batch]) for start in range(0, len(xs), batch)])

    for _ in range(20):  # warm both paths' workers
        cell()
        raw()
    mapped()
    raw_map()
    cells_load, maps_load = LoadWatch(), LoadWatch()
    with busy(args.load):
        cells = interleaved({"cell": cell, "raw": raw}, rounds(args), load=cells_load)
        maps = interleaved({"map": mapped, "raw": raw_map}, max(3, rounds(args) // 30), load=maps_load)
    cell_cpu, raw_cpu = (thread_cpu_ms(fn, rounds(args)) for fn in (cell, raw))
    busy_note = f", with --load {args.load:g}" if args.load else ""
    rows = [
        pair(
            "cells",
            "ray.cell",
            f"a trivial Ray task{busy_note}, back to back",
            ("`%%rayrun`", cells["cell"]),
            ("`ray.get(f.remote())`", cells["raw"]),
            cells_load,
        ),
        pair(
            "map",
            "ray.map",
            f"{len(xs):,} items of `2 * x`, in batches of {batch}{busy_note}",
            ('`jupyter_exec.map(..., backend="ray")`', maps["map"]),
            ("`ray.get` of one task per batch", maps["raw"]),
            maps_load,
        ),
    ]
    print(f"the kernel's own CPU per call: %%rayrun {cell_cpu:.2f} ms, ray.get(f.remote()) {raw_cpu:.2f} ms")
    report(rows, args)


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
