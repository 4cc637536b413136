"""Median wall time of a trivial ``%%sandbox`` container cell through the broker against the same
cell with the kernel talking to the engine itself, both with a warm pool.

    .venv/bin/python benchmarks/bench_broker.py [--runs 30]

A broker on a Unix socket is started for the measurement (its own data directory, no policy
file); the kernel is an IPython shell in this process. ``direct`` is the container backend on the
engine; ``broker`` is the same cell with ``ExecConfig.broker`` set, so the run goes kernel ->
socket -> broker -> the broker's warm container -> back. Between cells each waits for its pool
to be full again (cells typed by a person are seconds apart). Target: the broker adds <= 5 ms
at the median.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import median_ms, notebook_shell


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="jx-bench-broker-"))
    os.environ.setdefault("JX_DATA_DIR", str(home / "kernel"))
    socket_path = home / "broker.sock"
    command = [sys.executable, "-m", "jupyter_exec.cli", "broker", "--socket", str(socket_path)]
    broker = subprocess.Popen([*command, "--data-dir", str(home / "broker")], stderr=subprocess.DEVNULL)
    try:
        while not socket_path.exists():
            if broker.poll() is not None:
                raise SystemExit("the broker did not start")
            time.sleep(0.05)
        direct, brokered = measure(f"unix://{socket_path}", args.runs)
    finally:
        broker.terminate()
        broker.wait(30)
    print(f"%%sandbox --backend container, direct, pool warm:  {direct:7.2f} ms")
    print(f"%%sandbox --backend container, broker, pool warm:  {brokered:7.2f} ms")
    print(f"the broker adds {brokered - direct:+.2f} ms at the median (target <= 5 ms)")


def measure(address: str, runs: int) -> tuple[float, float]:
    shell = notebook_shell()
    from jupyter_exec import current_manager
    from jupyter_exec.backends.broker.transport import Address, ask

    manager = current_manager()

    def cell() -> None:
        shell.run_cell_magic("sandbox", "--backend container --quiet", "x = 1")

    def local_pool_ready() -> None:
        pool = manager.backend("container").pool
        while pool.idle_count() < pool.size:
            time.sleep(0.005)
        time.sleep(0.2)

    def broker_pool_ready() -> None:
        while ask(Address.parse(address), {"op": "resources"})["idle_containers"] < manager.config.pool_size:
            time.sleep(0.2)  # a request each: under the broker's rate limit
        time.sleep(0.2)

    cell()
    direct = median_ms(cell, runs, between=local_pool_ready)
    manager.shutdown()
    manager.config.broker = address
    cell()
    brokered = median_ms(cell, runs, between=broker_pool_ready)
    manager.shutdown()
    return direct, brokered


if __name__ == "__main__":
    main()
