"""OCI runtimes a cell's container may run under, and what each needs from the engine.

``runsc`` (gVisor) puts a user-space kernel between the cell and the host's. Docker runs
it once it is registered in ``/etc/docker/daemon.json``; the entry must carry the runtime
arguments jupyter-exec relies on (``REQUIRED_ARGS``): a run under a runtime registered
without them is refused with the entry to add, never run with part of the wall missing.
``jupyter-exec doctor --fix-runtime`` prints the entry; ``merge`` puts it into a file (what
the set-up step does), and SIGHUP to dockerd makes it reload its runtimes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DAEMON_JSON", "GVISOR", "REQUIRED_ARGS", "daemon_entry", "fix_text", "merge", "missing_args"]

DAEMON_JSON = Path("/etc/docker/daemon.json")
GVISOR = "runsc"

#: The runtime arguments each runtime needs here, and why.
REQUIRED_ARGS: dict[str, dict[str, str]] = {
    GVISOR: {
        "--network=none": "runsc refuses to share the host's network namespace (no --network under gVisor)",
        "--host-fifo=open": "the cell talks to the kernel through FIFOs in a bind mount",
        "--oci-seccomp": "without it gVisor ignores the container's seccomp profile",
        "--host-uds=open": "a --network HOST,... cell reaches its proxy through a Unix socket in a bind mount",
    },
}


def daemon_entry(runtime: str = GVISOR) -> dict[str, Any]:
    """The ``runtimes`` entry of daemon.json for ``runtime``."""
    path = shutil.which(runtime) or f"/usr/bin/{runtime}"
    return {runtime: {"path": path, "runtimeArgs": list(REQUIRED_ARGS.get(runtime, {}))}}


def missing_args(runtime: str, registered: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The arguments ``runtime`` lacks in the engine's registration (all of them if it is not registered)."""
    present = set(registered.get(runtime, ()))
    return [arg for arg in REQUIRED_ARGS.get(runtime, {}) if arg not in present]


def fix_text(runtime: str = GVISOR) -> str:
    """What ``doctor --fix-runtime`` prints: the entry, where it goes, and how to reload."""
    entry = json.dumps({"runtimes": daemon_entry(runtime)}, indent=2)
    reasons = "".join(f"\n  {arg}: {why}" for arg, why in REQUIRED_ARGS.get(runtime, {}).items())
    return (
        f"Register {runtime} with Docker: merge this into {DAEMON_JSON} (as root)\n{entry}\n"
        f"then reload dockerd's runtimes without a restart: kill -HUP $(cat /var/run/docker.pid)\n"
        f"Why each argument:{reasons}"
    )


def merge(path: Path, runtime: str = GVISOR) -> bool:
    """Put ``runtime``'s entry into the daemon.json at ``path``, keeping everything else there
    (an existing entry keeps its path and arguments, and gains the required ones). True if the
    file changed."""
    current: dict[str, Any] = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    runtimes = current.setdefault("runtimes", {})
    existing = runtimes.get(runtime) or daemon_entry(runtime)[runtime]
    have = list(existing.get("runtimeArgs") or ())
    wanted = {**existing, "runtimeArgs": have + [arg for arg in REQUIRED_ARGS.get(runtime, {}) if arg not in have]}
    if runtimes.get(runtime) == wanted:
        return False
    runtimes[runtime] = wanted
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".jupyter-exec.part")
    partial.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(partial, path)
    return True
