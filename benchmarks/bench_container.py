"""A trivial ``%%sandbox`` container cell, pool warm and pool off, each against the engine's own
way to the same work: ``exec`` into a running container for the warm cell (a Python started in
a container that is already up), ``run --rm`` for the cell with no pool.

    .venv/bin/python benchmarks/bench_container.py [--runs 20] [--quick] [--json]   # rootful Docker (runc)
    .venv/bin/python benchmarks/bench_container.py --runtime runsc                   # Docker with gVisor
    bash scripts/as-user python benchmarks/bench_container.py                        # rootless Podman (jx-user)

The engine is the one the container backend picks (``auto``), the image the backend's. The four
sides take turns call by call in this process, each after the same pause (a person types cells
seconds apart: the pool refills in it, and every other side waits as long). ``pool warm`` is the
default pool; ``pool off`` a second Manager with ``pool_size=0`` (a container created and
started on the cell's clock). The raw commands pass ``--network none``, as the sandbox does;
``exec`` goes into one container this script starts with ``sleep infinity`` and removes at the
end. Targets: warm <= 0.2x ``run --rm``, no pool <= 1.2x.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved, notebook_shell, use_manager

CELL = "x = 1"
PAUSE = 0.5  # seconds before every call, on every side


def main() -> None:
    parser = options(__doc__, runs=20, quick_runs=3)
    parser.add_argument("--runtime", help="OCI runtime for every side, e.g. runsc (default: the engine's)")
    args = parser.parse_args()
    if args.runtime:  # the kernel's default too, so its pool holds only containers of this runtime
        os.environ["JX_CONTAINER_RUNTIME"] = args.runtime
    shell = notebook_shell()
    from jupyter_exec import Manager, current_manager
    from jupyter_exec.config import ExecConfig

    warm_manager, cold_manager = current_manager(), Manager(ExecConfig(pool_size=0))
    backend = warm_manager.backend("container")
    facts, image = backend.engine.facts, backend.settings.image
    cli = shutil.which(facts.kind)
    if cli is None:
        raise SystemExit(f"the {facts.kind} CLI is needed for the raw side: install it")
    runtime = ["--runtime", args.runtime] if args.runtime else []
    run_rm = [cli, "run", "--rm", *runtime, "--network", "none", image, "python3", "-c", CELL]
    started = subprocess.run(
        [cli, "run", "-d", "--rm", *runtime, "--network", "none", image, "sleep", "infinity"],
        check=True,
        capture_output=True,
        text=True,
    )
    running = started.stdout.strip()
    line = "--backend container --quiet" + (f" --runtime {args.runtime}" if args.runtime else "")

    def cell_on(manager: Manager) -> None:
        use_manager(shell, manager)
        shell.run_cell_magic("sandbox", line, CELL)

    sides = {
        "run": lambda: subprocess.run(run_rm, check=True),
        "exec": lambda: subprocess.run([cli, "exec", running, "python3", "-c", CELL], check=True),
        "warm": lambda: cell_on(warm_manager),
        "cold": lambda: cell_on(cold_manager),
    }
    try:
        for side in sides.values():
            side()  # images, backends and pools started before the clock
        load = LoadWatch()
        times = interleaved(sides, rounds(args), pause=PAUSE, load=load)
    finally:
        subprocess.run([cli, "rm", "-f", running], capture_output=True)
        cold_manager.shutdown()
    name = args.runtime or facts.kind
    engine = f"{'rootless' if facts.rootless else 'rootful'} {facts.kind.capitalize()}"
    if args.runtime:
        engine = f"{engine} with {'gVisor' if args.runtime == 'runsc' else args.runtime}"
    work = f"a trivial container cell, {engine}, {PAUSE:g} s after the last"
    twins = {  # our side: (how it is called, its twin, the twin's label)
        "warm": ("pool warm", "exec", f"`{facts.kind} exec` into a running container"),
        "cold": ("pool off", "run", f"`{facts.kind} run --rm{' --runtime ' + args.runtime if args.runtime else ''}`"),
    }
    rows = [
        pair("cells", f"container.{name}.{side}", work, (f"`%%sandbox`, {how}", times[side]), (raw, times[twin]), load)
        for side, (how, twin, raw) in twins.items()
    ]
    print(f"engine: {facts.kind} {facts.version}, storage {facts.storage}, rootless {facts.rootless}")
    report(rows, args)


if __name__ == "__main__":
    main()
