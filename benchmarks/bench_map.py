"""``jupyter_exec.map`` over 1,000 items against ``multiprocessing.Pool(cores).map`` of the same
function: what a user would do otherwise on one machine.

    .venv/bin/python benchmarks/bench_map.py [--backend seccomp --backend container] [--items 1000] [--runs 3]

The function is ``math.sqrt`` (importable everywhere, so it travels by reference and the base
image needs no cloudpickle), as many at a time as the machine has cores on both sides. The map
goes through the Manager, the store and the backend: its items in batches (about four per
parallel slot), each batch a run in a fresh sandbox; on seccomp also ``batch_size=1``, a fresh
sandbox per item. The pool of unconfined processes is started inside its clock, as a user's
``with multiprocessing.Pool(n) as pool:`` would be. Each round runs every side once, whole,
in turn.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Callable

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell


def main() -> None:
    parser = options(__doc__, runs=3, quick_runs=1)
    parser.add_argument("--backend", choices=("seccomp", "container"), action="append")
    parser.add_argument("--items", type=int, help="items per map (default 1000; 100 with --quick)")
    args = parser.parse_args()
    notebook_shell()  # the kernel's Manager, as a notebook's map uses it
    import jupyter_exec

    items = list(range(args.items or (100 if args.quick else 1000)))
    cores = os.cpu_count() or 1

    def pool() -> None:
        with multiprocessing.Pool(cores) as workers:
            workers.map(math.sqrt, items)

    def mapped(backend: str, batch_size: int | None) -> None:
        jupyter_exec.map(math.sqrt, items, backend=backend, max_parallel=cores, batch_size=batch_size, progress=False)

    backends = args.backend or ("seccomp", "container")
    cases: dict[str, tuple[str, int | None]] = {f"map.{backend}": (backend, None) for backend in backends}
    if "seccomp" in backends:
        cases["map.seccomp-per-item"] = ("seccomp", 1)
    sides: dict[str, Callable[[], object]] = {"pool": pool}
    sides |= {key: functools.partial(mapped, *case) for key, case in cases.items()}
    for backend in backends:
        jupyter_exec.map(math.sqrt, [0], backend=backend, progress=False)  # the backend started
    load = LoadWatch()
    times = interleaved(sides, rounds(args), load=load)
    twin = (f"`multiprocessing.Pool({cores}).map`", times["pool"])
    rows = [
        pair(
            "map",
            key,
            f"{len(items):,} items of `math.sqrt`, {cores} at a time"
            + (", a sandbox per item (`batch_size=1`)" if batch_size else ""),
            (f'`jupyter_exec.map(..., backend="{backend}")`', times[key]),
            twin,
            load,
        )
        for key, (backend, batch_size) in cases.items()
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
