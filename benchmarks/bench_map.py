"""``jupyter_exec.map`` over 1,000 items, two at a time, against ``multiprocessing.Pool(2).map``.

    .venv/bin/python benchmarks/bench_map.py [--backend seccomp --backend container] [--items 1000]

The same function on each side, ``math.sqrt`` (importable everywhere, so it travels by
reference and the base image needs no cloudpickle). The map goes through the Manager, the store and
the backend: its items in batches (about four per parallel slot), each batch a run in a
fresh sandbox (``batch_size=1``: one sandbox per item, measured too on seccomp). The raw
tool is a ``multiprocessing.Pool(2)`` of unconfined processes started for the purpose.
Each side is timed whole, once after a warm-up.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import tempfile
import time


def timed_ms(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("seccomp", "container"), action="append")
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("JX_DATA_DIR", tempfile.mkdtemp(prefix="jx-bench-"))
    import jupyter_exec
    from jupyter_exec import Manager
    from jupyter_exec.current import set_current_manager

    set_current_manager(Manager())
    items = list(range(args.items))

    def pool() -> None:
        with multiprocessing.Pool(2) as workers:
            workers.map(math.sqrt, items)

    raw = timed_ms(pool)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.items} items")
    print(f"multiprocessing.Pool(2).map:                 {raw:8.1f} ms")
    for backend in args.backend or ("seccomp", "container"):
        for batch_size in (None, 1) if backend == "seccomp" else (None,):

            def mapped(backend: str = backend, batch_size: int | None = batch_size) -> None:
                jupyter_exec.map(
                    math.sqrt, items, backend=backend, max_parallel=2, batch_size=batch_size, progress=False
                )

            jupyter_exec.map(math.sqrt, [0], backend=backend, progress=False)  # the backend started
            took = timed_ms(mapped)
            label = f"map, {backend}" + (", batch_size=1" if batch_size else "")
            print(f"{label + ':':45}{took:8.1f} ms   ratio {took / raw:.2f}x")


if __name__ == "__main__":
    main()
