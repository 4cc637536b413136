"""``RayOptions``: where and with what a ``%%rayrun`` cell runs (address, resources, node)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from jupyter_exec.errors import SpecError
from jupyter_exec.spec import Placement
from jupyter_exec.units import parse_count, parse_number, parse_size

__all__ = ["LOCAL_RAY", "RayOptions"]

LOCAL_RAY = "local"  # the embedded Ray a kernel starts for itself (as the policy's ray_addresses name it)


@dataclass(frozen=True)
class RayOptions(Placement):
    """Where and with what a cell runs on Ray (its ``RunSpec.placement``), parsed once in the magic."""

    address: str | None = None  # None: embedded local Ray
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes reserved for scheduling (Ray's ``memory``)
    custom: tuple[tuple[str, float], ...] = ()  # custom resources a node declares (``ray start --resources``)
    node: str | None = None  # node id (or prefix), IP, hostname, or "local"
    soft: bool = False  # node affinity is a preference, not a rule
    gpu_ids: tuple[str, ...] = ()  # pinned through CUDA_VISIBLE_DEVICES
    retries: int = 0  # user code is not retried unless asked
    wait_for_resources: bool = False  # for autoscaling clusters: queue instead of failing

    @classmethod
    def parse(cls, **values: Any) -> RayOptions:
        """Options from user-typed strings; ``None`` values are left at their defaults. Parsed
        once per distinct set of values (every ``%%rayrun`` parses them)."""
        try:
            return _parsed(frozenset(values.items()))
        except TypeError:  # a value that cannot be a cache key (a list): parsed as it is
            return cls._parse(values)

    @classmethod
    def _parse(cls, values: dict[str, Any]) -> RayOptions:
        v = {k: x for k, x in values.items() if x is not None}
        unknown = set(v) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SpecError(f"unknown Ray option(s) {sorted(unknown)}")
        gpu_ids = tuple(g.strip() for g in str(v.get("gpu_ids", "")).split(",") if g.strip())
        custom = _custom_resources(v.get("custom", ""))
        if "num_gpus" not in v and gpu_ids:
            v["num_gpus"] = len(gpu_ids)
        parsed = {
            **v,
            "num_cpus": parse_number(v.get("num_cpus", 1), "--num-cpus", allow_zero=True),
            "num_gpus": parse_number(v.get("num_gpus", 0), "--num-gpus", allow_zero=True),
            "memory": parse_size(v["memory"], "--memory") if "memory" in v else None,
            "gpu_ids": gpu_ids,
            "custom": custom,
            "retries": parse_count(v.get("retries", 0), "--retries", allow_zero=True, example="0 or 3"),
        }
        if gpu_ids and parsed["num_gpus"] < len(gpu_ids):
            raise SpecError(
                f"--gpu-id {','.join(gpu_ids)} names {len(gpu_ids)} GPU(s) but --num-gpus is "
                f"{parsed['num_gpus']:g}; drop --num-gpus or raise it"
            )
        if parsed.get("soft") and not parsed.get("node"):
            raise SpecError("--soft needs --node (it makes the node a preference)")
        return cls(**parsed)

    def resources(self) -> dict[str, float]:
        """What one task reserves, in Ray's resource names."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float(self.memory or 0), **dict(self.custom)}
        return {k: x for k, x in wanted.items() if x}

    def task_options(self, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
        """Ray's ``.options()`` for a task with these reservations and retries."""
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": self.retries,
            "runtime_env": runtime_env,
        }
        if self.memory:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@functools.lru_cache(maxsize=128)
def _parsed(values: frozenset[tuple[str, Any]]) -> RayOptions:
    return RayOptions._parse(dict(values))


_BUILT_IN = {"CPU": "--num-cpus", "GPU": "--num-gpus", "memory": "--memory"}


def _custom_resources(value: object) -> tuple[tuple[str, float], ...]:
    """``name=amount,name=amount`` (as ``--resources`` takes them), sorted by name."""
    if isinstance(value, tuple):
        return value
    found: dict[str, float] = {}
    for part in str(value).split(","):
        if not part.strip():
            continue
        name, sep, amount = (x.strip() for x in part.partition("="))
        if not sep or not name:
            raise SpecError(f"--resources {value}: write each as NAME=AMOUNT, e.g. --resources accelerator=1,disk=2")
        if name in _BUILT_IN:
            raise SpecError(f"--resources {name}=...: ask for {name} with {_BUILT_IN[name]}")
        found[name] = parse_number(amount, f"--resources {name}", example="1 or 0.5")
    return tuple(sorted(found.items()))
