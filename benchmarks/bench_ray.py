"""``%%rayrun`` and ``jupyter_exec.map`` against raw Ray, on the same local Ray.

    .venv/bin/python benchmarks/bench_ray.py [--runs 200] [--items 1000]

1. A trivial cell through IPython's magic, the Manager, the store and a Ray task and
   back, against ``ray.get(f.remote())``. Target ≤ 1.5×.
2. 1,000 small items through ``jupyter_exec.map`` against
   ``ray.get([f.remote(x) for x in xs])``. Target ≤ 1.2×.

Both sides are timed alternately in this run, so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import os

from timing import median_ms, notebook_shell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--items", type=int, default=1000)
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
    cell_ms, raw_ms = [], []
    for _ in range(5):
        cell_ms.append(median_ms(cell, args.runs // 5))
        raw_ms.append(median_ms(lambda: ray.get(trivial.remote()), args.runs // 5))
    cell_median, raw_median = sorted(cell_ms)[2], sorted(raw_ms)[2]
    print(
        f"trivial cell: %%rayrun {cell_median:.2f} ms, ray.get(f.remote()) {raw_median:.2f} ms, "
        f"ratio {cell_median / raw_median:.2f} (target <= 1.5)"
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


if __name__ == "__main__":
    main()
