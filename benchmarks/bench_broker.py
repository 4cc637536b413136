"""A trivial ``%%sandbox`` container cell through the broker, in each of its deployments, against
the same cell with the kernel talking to the engine itself; warm pools everywhere.

    .venv/bin/python benchmarks/bench_broker.py [--runs 30] [--quick] [--json] [--no-hub]

Two deployments (docs/broker.md), each started for the measurement with the same policy file:
``unix``, the broker on a Unix socket (kernel -> socket -> broker -> the broker's warm
container -> back); ``hub``, the broker as a JupyterHub service (kernel -> the hub's proxy over
HTTP with a user's token, which the broker checks with the hub -> broker -> ...). The hub is a
real one (``tests/hub.py``: the hub as root, configurable-http-proxy, the ordinary account's
server), so that side needs root; ``--no-hub`` leaves it out. The kernel is an IPython shell in
this process with one Manager per way in; the sides take turns call by call, each after the
same pause (the pools refill in it). Target: the broker adds <= 5 ms at the median.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell, use_manager

CELL = "x = 1"
PAUSE = 0.5
POLICY = "memory: 1g\n"


def unix_broker(home: Path) -> subprocess.Popen[bytes]:
    """A broker on ``home/broker.sock``, answering once the socket is there."""
    socket_path = home / "broker.sock"
    command = [sys.executable, "-m", "jupyter_exec.cli", "broker", "--socket", str(socket_path)]
    broker = subprocess.Popen(
        [*command, "--data-dir", str(home / "broker"), "--policy", str(home / "broker.yaml")],
        stderr=subprocess.DEVNULL,
    )
    while not socket_path.exists():
        if broker.poll() is not None:
            raise SystemExit("the broker did not start")
        time.sleep(0.05)
    return broker


def main() -> None:
    parser = options(__doc__, runs=30, quick_runs=3)
    parser.add_argument("--no-hub", action="store_true", help="leave out the hub deployment (it needs root)")
    args = parser.parse_args()
    if not args.no_hub and os.geteuid() != 0:
        raise SystemExit("the hub deployment needs root (the hub starts each user's server): run as root, or --no-hub")
    home = Path(tempfile.mkdtemp(prefix="jx-bench-broker-"))
    (home / "broker.yaml").write_text(POLICY)
    os.environ.setdefault("JX_DATA_DIR", str(home / "kernel"))
    shell = notebook_shell()
    from jupyter_exec import Manager, current_manager
    from jupyter_exec.config import ExecConfig

    hub = None
    broker = unix_broker(home)
    try:
        managers = {"direct": current_manager(), "unix": Manager(ExecConfig(broker=f"unix://{home / 'broker.sock'}"))}
        if not args.no_hub:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from hub import Hub  # a real hub, as the broker's tests run it

            hub = Hub((os.environ.get("JX_USER", "jx-user"),), POLICY)
            token = next(iter(hub.tokens.values()))
            managers["hub"] = Manager(ExecConfig(broker=hub.broker_url, broker_token=token))

        def cell_on(manager: Manager) -> None:
            use_manager(shell, manager)
            shell.run_cell_magic("sandbox", "--backend container --quiet", CELL)

        sides = {name: (lambda manager=manager: cell_on(manager)) for name, manager in managers.items()}
        for side in sides.values():
            side()  # each way in and its pool started before the clock
        load = LoadWatch()
        times = interleaved(sides, rounds(args), pause=PAUSE, load=load)
        for name, manager in managers.items():
            if name != "direct":
                manager.shutdown()
    finally:
        broker.terminate()
        broker.wait(30)
        if hub is not None:
            hub.stop()
    deployments = {"unix": "the broker on a Unix socket", "hub": "the broker as a JupyterHub service (HTTP, a token)"}
    rows = [
        pair(
            "cells",
            f"broker.{name}",
            f"a trivial container cell, pool warm, {PAUSE:g} s after the last",
            (f"`%%sandbox` through {deployments[name]}", times[name]),
            ("the kernel on the engine itself", times["direct"]),
            load,
        )
        for name in managers
        if name != "direct"
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
