"""Median wall time of a trivial ``%%sandbox --backend docker`` cell against ``docker run``.

    .venv/bin/python benchmarks/bench_docker.py [--runs 20]

All three are measured in this run, on this machine, with the same image. The cell goes
through IPython's magic, the Manager, the store, a container and back. ``pool warm``
waits for the pool to refill between cells (cells typed by a person are seconds apart);
``no pool`` creates and starts a container per cell. The reference is the Docker CLI's
``docker run --rm IMAGE python3 -c pass``. Targets: warm <= 0.2x, no pool <= 1.2x.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

from timing import median_ms, notebook_shell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    from jupyter_exec.backends.container import DockerConfig

    image = DockerConfig().image
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise SystemExit("the docker CLI is needed for the reference figure (apt-get install docker.io)")

    shell = notebook_shell()
    from jupyter_exec import current_manager

    manager = current_manager()

    def cell() -> None:
        shell.run_cell_magic("sandbox", "--backend docker --quiet", "x = 1")

    def pool_ready() -> None:
        pool = manager.backend("docker").pool
        while pool.idle_count() < pool.size:
            time.sleep(0.005)
        time.sleep(0.2)  # let the daemon settle after the refill

    def settle() -> None:
        time.sleep(0.2)  # the previous container's removal runs in the background

    reference = median_ms(
        lambda: subprocess.run([docker_cli, "run", "--rm", image, "python3", "-c", "pass"], check=True),
        runs,
        between=settle,
    )
    cell()
    warm = median_ms(cell, runs, between=pool_ready)
    manager.shutdown()
    manager.config.pool_size = 0
    cold = median_ms(cell, runs, between=settle)
    manager.shutdown()
    print(f"docker run --rm {image} python3 -c pass: {reference:7.1f} ms")
    print(f"%%sandbox --backend docker, pool warm:  {warm:7.1f} ms   ratio {warm / reference:.2f}x  (target <= 0.2x)")
    print(f"%%sandbox --backend docker, no pool:    {cold:7.1f} ms   ratio {cold / reference:.2f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main()
