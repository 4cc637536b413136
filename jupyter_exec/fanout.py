"""``jupyter_exec.map``: one function or cell over many inputs, as Ray tasks.

Items are sent in batches (one task per batch, so a thousand small items cost about
what a handful of tasks cost), at most ``max_in_flight`` tasks run at once, a progress
line counts items done, and the results come back in the items' order, as data (the
same tagged JSON a cell's result travels as). The first item that raises stops the map
and its error is raised here, naming the item.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from .backends.ray import RayOptions, connection, ray_runtime_env
from .config import ExecConfig
from .envs import EnvSpec
from .errors import NodeFailedError, TransferError, remote_error
from .policy import policy_in_effect
from .runner.transfer import decode
from .spec import RunSpec, parse_env

__all__ = ["map"]


def map(work: Callable[[Any], Any] | str, items: Iterable[Any], *, address: str | None = None,
        num_cpus: float = 1, num_gpus: float = 0, memory: str | int | None = None, retries: int = 0,
        env: dict[str, str] | None = None, pip: list[str] | None = None, working_dir: str | None = None,
        trust: bool = False, batch_size: int | None = None, max_in_flight: int | None = None,
        wait_for_resources: bool = False, progress: bool = True) -> list[Any]:
    """``[work(item) for item in items]``, run on Ray; ``work`` may also be cell code whose
    last expression is the result, with the item bound to ``item``.

    Defaults: the kernel's Ray connection (or ``ExecConfig.ray_address``, or a local Ray),
    one CPU per task, as many tasks at once as the cluster has CPUs for.
    """
    options = RayOptions.parse(address=address or ExecConfig().ray_address or None, num_cpus=num_cpus,
                               num_gpus=num_gpus, memory=memory, retries=retries,
                               wait_for_resources=wait_for_resources)
    policy_in_effect().check_ray(options)          # the administrator's ceilings, before Ray is connected
    env_vars = parse_env([f"{k}={v}" for k, v in (env or {}).items()])
    runtime_env = EnvSpec.from_options(base_dir=Path.cwd(), pip=pip, working_dir=working_dir) \
        if pip or working_dir else None
    spec = RunSpec(backend="ray", env=env_vars, trust=trust, placement=options.placement(), runtime_env=runtime_env)
    return _fan_out(work, list(items), options, spec=spec, batch_size=batch_size,
                    max_in_flight=max_in_flight, say=_progress if progress else None)


def _progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _fan_out(work: Any, items: list, options: RayOptions, *, spec: RunSpec,
            batch_size: int | None, max_in_flight: int | None, say: Callable[[str], None] | None) -> list:
    """``work`` over ``items`` in batches, at most ``max_in_flight`` tasks at once; results in order."""
    import ray
    from ray.exceptions import RayError
    conn = connection()
    conn.ensure(options.address, _progress)
    if not options.wait_for_resources:
        conn.check_feasible(options, None)
    total, trust = len(items), spec.trust
    if not total:
        return []
    if max_in_flight is None:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        max_in_flight = max(1, int(cpus // options.num_cpus) if options.num_cpus else int(cpus))
    batch_size = batch_size or max(1, math.ceil(total / (max_in_flight * 4)))
    task = conn.batch_task.options(num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                                   max_retries=options.retries, runtime_env=ray_runtime_env(spec),
                                   **({"memory": options.memory} if options.memory else {}))
    work_ref = ray.put(work)
    starts = list(range(0, total, batch_size))
    results: list[Any] = [None] * total
    in_flight: dict[Any, int] = {}
    done, shown = 0, 0.0
    try:
        while starts or in_flight:
            while starts and len(in_flight) < max_in_flight:
                start = starts.pop(0)
                in_flight[task.remote(work_ref, items[start:start + batch_size], start, trust)] = start
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                start = in_flight.pop(ref)
                try:
                    batch = json.loads(ray.get(ref))
                except RayError as error:
                    raise NodeFailedError(f"map: the task for items {start}.. failed: {error}") from error
                _raise_batch_error(batch)
                for offset, encoded in enumerate(batch["results"]):
                    results[start + offset] = decode(encoded, trust)
                done += len(batch["results"])
            if say and (time.monotonic() - shown > 0.2 or done == total):
                shown = time.monotonic()
                say(f"\r[jupyter-exec] map: {done}/{total} items" + ("\n" if done == total else ""))
    except BaseException:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    return results


def _raise_batch_error(batch: dict) -> None:
    if "untransferable" in batch:
        raise TransferError(f"map: {batch['untransferable']} and cannot come back as data; "
                            "return data, or pass trust=True to pickle it (only for code you trust)")
    if "error" in batch:
        described = batch["error"]
        raise remote_error(described["type"], f"item {batch['index']}: {described['message']}",
                           described["traceback"])

