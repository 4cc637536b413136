"""``--in`` of big values: a 100 MB float64 array and a 1M-row DataFrame, into a sandbox.

    .venv/bin/python benchmarks/bench_transfer.py [--backend seccomp --backend container] [--runs 5]

Each value goes in with ``%%sandbox --in NAME --mem 2g`` to a cell that only touches it
(``len(NAME)``), through the magic as a notebook's cell; the same cell without ``--in`` is
the floor it is compared with (the sandbox's own start). Wall times swing with the machine's
load, so each row also gives the CPU seconds spent on the kernel's side and in the sandbox
(from the run's record), and the sandbox's peak memory, of the last run. The frame has an int, a float, a
string, a time-zone datetime and a categorical column. Run the same script on a checkout of
the project from before values travelled as data for the "before" figures (then ``--in``
was one cloudpickle, which the base image's numpy 1 cannot load: the container says so).
"""

from __future__ import annotations

import argparse
import os
import time

from timing import median_ms, notebook_shell


def values() -> dict[str, object]:
    import numpy as np
    import pandas as pd

    rows = 1_000_000
    frame = pd.DataFrame(
        {
            "ints": np.arange(rows),
            "floats": np.random.default_rng(0).random(rows),
            "strings": [f"item {i % 1000}" for i in range(rows)],
            "when": pd.date_range("2024-01-01", periods=rows, freq="s", tz="Europe/Paris"),
            "kind": pd.Categorical.from_codes(np.arange(rows) % 3, ["low", "mid", "high"]),
        }
    )
    return {"array": np.zeros(100 * 2**20 // 8), "frame": frame}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("seccomp", "container"), action="append")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    shell = notebook_shell()
    shell.user_ns.update(values())
    from jupyter_exec.current import current_manager

    print(f"load average {os.getloadavg()[0]:.1f}; median of {args.runs} runs")
    for backend in args.backend or ("seccomp", "container"):
        line = f"--backend {backend} --quiet --mem 2g"
        floor = median_ms(lambda line=line: shell.run_cell_magic("sandbox", line, "0"), args.runs)
        print(f"{backend + ', no --in:':34}{floor:9.1f} ms")
        for name in ("array", "frame"):
            kernel_cpu: list[float] = []

            def sent(line: str = f"{line} --in {name}", name: str = name, spent: list[float] = kernel_cpu) -> None:
                started = time.process_time()
                shell.run_cell_magic("sandbox", line, f"len({name})")
                spent.append(time.process_time() - started)

            label = f"{backend}, --in {name}:"
            try:
                took = median_ms(sent, args.runs)
            except Exception as error:  # the code before this change: a pickle numpy 1 cannot load
                print(f"{label:34}  fails: {type(error).__name__}: {str(error)[:80]}")
                continue
            run = current_manager().records.runs(1)[0]
            print(
                f"{label:34}{took:9.1f} ms  (+{took - floor:.1f} ms over no --in); CPU: kernel {kernel_cpu[-1]:.2f} s, "
                f"sandbox {run['cpu_seconds']:.2f} s; sandbox peak {run['peak_memory'] / 2**20:.0f} MiB"
            )


if __name__ == "__main__":
    main()
