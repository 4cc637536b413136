"""Median wall time of a trivial ``%%sandbox`` container cell against the engine's own ``run``.

    .venv/bin/python benchmarks/bench_container.py [--runs 20]                  # rootful Docker (runc)
    .venv/bin/python benchmarks/bench_container.py --runtime runsc              # Docker with gVisor
    bash scripts/as-user python benchmarks/bench_container.py                   # rootless Podman (jx-user)

The engine is the one the container backend picks (``auto``). All three figures are measured
in one run, on this machine, with the same image. The cell goes through IPython's magic, the
Manager, the store, a container and back. ``pool warm`` waits for the pool to refill between
cells (cells typed by a person are seconds apart); ``no pool`` creates and starts a container
per cell. The reference is the engine's CLI: ``docker run --rm [--runtime R] --network none
IMAGE python3 -c pass`` or ``podman run --rm --network none IMAGE python3 -c pass``.
Targets: warm <= 0.2x, no pool <= 1.2x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from timing import median_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtime", help="OCI runtime for both, e.g. runsc (default: the engine's)")
    args = parser.parse_args()
    os.environ.setdefault("JX_DATA_DIR", tempfile.mkdtemp(prefix="jx-bench-"))
    if args.runtime:  # the kernel's default too, so its pool holds only containers of this runtime
        os.environ["JX_CONTAINER_RUNTIME"] = args.runtime

    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_exec")
    from jupyter_exec import current_manager

    manager = current_manager()
    backend = manager.backend("container")
    facts, image = backend.engine.facts, backend.settings.image
    cli = shutil.which(facts.kind)
    if cli is None:
        raise SystemExit(f"the {facts.kind} CLI is needed for the reference figure")
    runtime = ["--runtime", args.runtime] if args.runtime else []
    reference_command = [cli, "run", "--rm", *runtime, "--network", "none", image, "python3", "-c", "pass"]
    line = "--backend container --quiet" + (f" --runtime {args.runtime}" if args.runtime else "")

    def cell() -> None:
        shell.run_cell_magic("sandbox", line, "x = 1")

    def pool_ready() -> None:
        pool = manager.backend("container").pool
        while pool.idle_count() < pool.size:
            time.sleep(0.005)
        time.sleep(0.2)  # let the engine settle after the refill

    def settle() -> None:
        time.sleep(0.2)  # the previous container's removal runs in the background

    reference = median_ms(lambda: subprocess.run(reference_command, check=True), args.runs, between=settle)
    cell()
    warm = median_ms(cell, args.runs, between=pool_ready)
    manager.shutdown()
    manager.config.pool_size = 0
    cold = median_ms(cell, args.runs, between=settle)
    manager.shutdown()
    engine = f"{'rootless' if facts.rootless else 'rootful'} {facts.kind} {facts.version}, storage {facts.storage}"
    shown = " ".join([facts.kind, *reference_command[1:]])
    print(f"engine: {engine}" + (f", runtime {args.runtime}" if args.runtime else ""))
    print(f"{shown}: {reference:7.1f} ms   (load average {os.getloadavg()[0]:.1f})")
    print(f"%%sandbox {line}, pool warm: {warm:7.1f} ms   ratio {warm / reference:.2f}x  (target <= 0.2x)")
    print(f"%%sandbox {line}, no pool:   {cold:7.1f} ms   ratio {cold / reference:.2f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main()
