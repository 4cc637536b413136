"""What the keeper costs a container's create: through it, against straight to the engine.

    .venv/bin/python benchmarks/bench_keeper.py [--runs 60] [--quick] [--json]   # rootful Docker
    bash scripts/as-user python benchmarks/bench_keeper.py                       # rootless Podman (jx-user)

The engine is the one the container backend picks (``auto``); the image is the backend's.
Creates through the keeper and straight to the engine are called in turn (each container is
removed after the timing, untimed). The first create of a process also starts its keeper:
that figure is one sample, printed apart. Warm cells never create: ``bench_container.py``
measures them.
"""

from __future__ import annotations

import time

from speed_rows import options, pair, report, rounds
from timing import LoadWatch, interleaved

LABEL = {"jupyter-exec.bench": "keeper"}


def main() -> None:
    args = options(__doc__, runs=60, quick_runs=5).parse_args()

    from jupyter_exec.backends.container import ContainerBackend, keepers
    from jupyter_exec.config import ExecConfig

    backend = ContainerBackend(ExecConfig(pool_size=0))
    engine, image = backend.engine, backend.settings.image
    api = engine.client.api
    api.version()  # the client's own first call is not the keeper's
    started = time.perf_counter()
    keepers.create(engine, image, ["true"], labels=LABEL)
    first = (time.perf_counter() - started) * 1000
    load = LoadWatch()
    try:
        times = interleaved(
            {
                "relayed": lambda: keepers.create(engine, image, ["true"], labels=LABEL),
                "direct": lambda: api.create_container(image, ["true"], labels=LABEL),
            },
            rounds(args),
            load=load,
        )
    finally:
        for container in api.containers(all=True, filters={"label": "jupyter-exec.bench=keeper"}):
            api.remove_container(container["Id"], force=True)
    facts = engine.facts
    engine_name = f"{'rootless' if facts.rootless else 'rootful'} {facts.kind.capitalize()}"
    print(f"engine: {engine_name} {facts.version}, storage {facts.storage}")
    print(f"first create, starting the keeper: {first:6.1f} ms (one sample)")
    row = pair(
        "parts",
        f"keeper.{facts.kind}",
        f"a container's create, {engine_name}",
        ("through the kernel's keeper", times["relayed"]),
        ("straight to the engine", times["direct"]),
        load,
    )
    report([row], args)


if __name__ == "__main__":
    main()
