"""What a cell's container is made with: the lock-down, the limits as the engine can keep them,
the runtime, our seccomp profile.

Lock-down on every engine: no network (``--network`` gives the default bridge), a
read-only root with a size-limited tmpfs at ``/tmp`` (the cell's working directory and
``HOME``), no capabilities, ``no-new-privileges``, our seccomp profile (``seccomp``), a
non-root user, never the engine's socket; the container is removed by the engine when
it stops (``auto_remove``), which is how it goes when its kernel dies (see ``pool``).

Limits go to the engine's own cgroup settings where it can set them (``Facts.cgroup_limits``):
``--mem`` to ``mem_limit`` = ``memswap_limit`` (no swap on top), ``--cpus`` to
``nano_cpus``, ``--pids`` to ``pids_limit``. Resource limits of a process (``--cpu-time``,
``--fsize``, the open-file limit) are set by the bootstrap in the cell's own process
(``runner/confine.py``'s rlimits, shipped beside it), never as the engine's ulimits:
Podman's Docker-compatible API drops those without a word. A rootless engine on a cgroup
v1 host has no cgroup of its own to set, so there ``--mem`` becomes ``RLIMIT_AS`` (each
process's address space: an allocation past it raises ``MemoryError``), ``--pids``
becomes ``RLIMIT_NPROC`` (counted per container: Podman gives each its own user
namespace) and ``--cpus`` is refused (it is not among the limits the backend enforces
there). Under gVisor ``--pids`` is ``RLIMIT_NPROC`` too: gVisor counts its sandbox's
processes itself, and a host pids cgroup would count gVisor's own threads (a sandbox that
cannot make one dies whole).
``--shm`` is the size of the container's ``/dev/shm``.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec.errors import BackendUnavailableError
from jupyter_exec.limits import Gpus
from jupyter_exec.runner.plans import Rlimits
from jupyter_exec.spec import Limits, Mount
from jupyter_exec.units import format_size, parse_size

from .config import DockerConfig
from .engine import Engine
from .runtimes import GVISOR, missing_args

__all__ = ["CA_TARGET", "SLOT_ROOT", "ContainerPlan", "bind", "plan"]

#: This user's folder of slot folders (see ``pool``) and seccomp profiles.
SLOT_ROOT = Path(tempfile.gettempdir()) / f"jupyter-exec-docker-{os.getuid()}"
CA_TARGET = "/etc/ssl/certs/jupyter-exec-ca.crt"
_ENVIRONMENT = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class ContainerPlan:
    """Everything fixed at ``create`` (host config, environment, user namespace mode), the rlimits
    the bootstrap sets, and notes on how each limit is kept (for the run's record)."""

    host: dict[str, Any]  # keyword arguments of the SDK's create_host_config
    environment: dict[str, str]
    userns: str | None  # Podman's keep-id for a rootless engine: the cell's uid is the user's
    gvisor: bool
    rlimits: Rlimits  # set by the bootstrap in the cell's process (runner/confine.py)
    notes: tuple[str, ...] = ()


def bind(source: Path, target: str, read_only: bool) -> Any:
    from docker.types import Mount as DockerMount

    return DockerMount(target=target, source=str(source), type="bind", read_only=read_only)


def plan(
    limits: Limits, mounts: tuple[Mount, ...], *, engine: Engine, settings: DockerConfig, runtime: str | None
) -> ContainerPlan:
    """The container for a run with these (admitted) limits, mounts and runtime on ``engine``; refuses
    (``BackendUnavailableError``) a runtime the engine cannot keep."""
    from docker.types import DeviceRequest

    facts = engine.facts
    gvisor = runtime == GVISOR
    if runtime:
        _check_runtime(engine, runtime, limits, settings.user)
    rlimits: Rlimits = {"nofile": settings.nofile}
    notes = []
    host: dict[str, Any] = {
        "network_mode": "bridge" if limits.open_network else "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={parse_size(settings.tmp_size, 'DockerConfig.tmp_size')},mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", engine.seccomp_option(SLOT_ROOT, gvisor=gvisor)],
        "shm_size": limits.shm or parse_size(settings.shm_size, "DockerConfig.shm_size"),
        "mounts": [bind(m.source, m.target, m.read_only) for m in mounts],
        "auto_remove": True,
    }
    if runtime:
        host["runtime"] = runtime
    if facts.kind == "podman":
        # Podman puts writable tmpfs of no size limit at /run and /var/tmp under a read-only root
        # (its --read-only-tmpfs, which its API cannot turn off): ours, read-only, take their place.
        host["tmpfs"].update(dict.fromkeys(("/run", "/var/tmp"), "ro,nosuid,nodev,size=4k"))
    if limits.memory is not None:
        if "memory" in facts.cgroup_limits:
            host.update(mem_limit=limits.memory, memswap_limit=limits.memory)
        else:
            rlimits["as"] = limits.memory
            notes.append(f"--mem {format_size(limits.memory)} as RLIMIT_AS of each process (no cgroup here)")
    if limits.cpus is not None:  # admitted only where the engine has a cgroup for it
        host["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.pids is not None:
        if "pids" in facts.cgroup_limits and not gvisor:
            host["pids_limit"] = limits.pids
        else:  # gVisor counts its sandbox's processes itself; a host pids cgroup counts gVisor's threads
            rlimits["nproc"] = limits.pids
            notes.append(f"--pids {limits.pids} as RLIMIT_NPROC")
    if limits.cpu_time is not None:
        rlimits["cpu"] = max(1, math.ceil(limits.cpu_time))
    if limits.fsize is not None:
        rlimits["fsize"] = limits.fsize
    if limits.gpus is not None:
        host["device_requests"] = [_device_request(DeviceRequest, limits.gpus)]
    environment = dict(_ENVIRONMENT)
    if (limits.open_network or limits.hosts is not None) and settings.ca_bundle:
        host["mounts"].append(bind(Path(settings.ca_bundle), CA_TARGET, True))
        environment.update(dict.fromkeys(("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"), CA_TARGET))
    userns = "keep-id" if facts.kind == "podman" and facts.rootless else None
    return ContainerPlan(host, environment, userns, gvisor, rlimits, tuple(notes))


def _check_runtime(engine: Engine, runtime: str, limits: Limits, user: str) -> None:
    """Refuse a runtime the engine lacks, or one registered without the arguments we rely on."""
    registered = engine.facts.runtimes
    if runtime == GVISOR and engine.facts.kind != "docker":
        raise BackendUnavailableError(
            "container",
            f"--runtime {GVISOR}: gVisor is set up here for Docker, whose registration carries the runtime "
            f"arguments it needs; the engine at {engine.url} is {engine.facts.kind}",
            "use Docker with runsc registered (jupyter-exec doctor --fix-runtime), or drop --runtime",
        )
    if runtime not in registered:
        fix = "jupyter-exec doctor --fix-runtime shows how to register it" if runtime == GVISOR else "register it"
        raise BackendUnavailableError(
            "container",
            f"--runtime {runtime}: the engine at {engine.url} has no such runtime "
            f"(it has: {', '.join(sorted(registered)) or 'its default only'})",
            fix + ", or drop --runtime",
        )
    missing = missing_args(runtime, registered)
    if missing:
        raise BackendUnavailableError(
            "container",
            f"--runtime {runtime} is registered without {' '.join(missing)}",
            "add them to its runtimeArgs (jupyter-exec doctor --fix-runtime prints the entry), then SIGHUP dockerd",
        )
    if runtime == GVISOR and os.geteuid() != 0 and user.partition(":")[0] == str(os.geteuid()):
        raise BackendUnavailableError(
            "container",
            f"--runtime {GVISOR} with the cell running as this kernel's own uid ({user}): gVisor needs a "
            "writable mount for the cell's output FIFOs, and the cell would own that folder on the host",
            "set DockerConfig.user to another uid, e.g. 65534:65534",
        )
    if runtime == GVISOR and limits.open_network:
        raise BackendUnavailableError(
            "container",
            "--network under --runtime runsc: gVisor runs here with --network=none (this runsc cannot share "
            "the host's network namespace)",
            "drop --network, or drop --runtime runsc",
        )


def _device_request(device_request: Any, gpus: Gpus) -> Any:
    """The engine's request for ``gpus``: ``all`` is every GPU the engine has (Docker's count -1)."""
    if gpus.ids:
        return device_request(device_ids=list(gpus.ids), capabilities=[["gpu"]])
    return device_request(count=-1 if gpus.all else gpus.number, capabilities=[["gpu"]])
