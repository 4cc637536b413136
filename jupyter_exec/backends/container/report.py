"""The container part of ``doctor``: each engine found, rootless or not, its cgroup mode and the
limits it can set, its runtimes, and which one ``auto`` uses."""

from __future__ import annotations

import shutil

from jupyter_exec.config import application_config

from . import discovery
from .config import DockerConfig
from .engine import Engine
from .runtimes import GVISOR, missing_args

__all__ = ["engine_report"]


def engine_report() -> list[str]:
    """Lines for ``doctor`` (indented under the backend list)."""
    settings = DockerConfig(config=application_config())
    lines = ["container engines:"]
    configured = discovery.configured_url(settings.url)
    found = discovery.survey(settings.docker_group)
    chosen = configured or next((f.url for f in found if f.usable), None)
    if configured and configured not in {f.url for f in found}:
        lines.append(f"  * configured {configured}")
    for engine in found:
        mark = "*" if engine.url == chosen else " "
        lines.append(f"  {mark} {engine.label:18} {engine.url}")
        lines.append(f"      {engine.note}")
        if engine.url == chosen and engine.answers:
            lines.extend(_runtime_lines(Engine(chosen)))
    if not found and not configured:
        lines.append("    none found: install Podman (apt-get install podman uidmap) or Docker")
    return lines


def _runtime_lines(engine: Engine) -> list[str]:
    try:
        registered = engine.facts.runtimes
    except Exception:  # the survey's note already says the facts could not be read
        return []
    lines: list[str] = []
    if engine.facts.kind != "docker":
        return [f"      --runtime {GVISOR} (gVisor): set up for Docker only (not on {engine.facts.kind})"]
    if GVISOR in registered:
        missing = missing_args(GVISOR, registered)
        state = "ready" if not missing else f"registered without {' '.join(missing)}: --runtime runsc is refused"
        lines.append(f"      --runtime {GVISOR} (gVisor): {state}")
    elif shutil.which(GVISOR):
        lines.append(f"      --runtime {GVISOR} (gVisor): installed, not registered with this engine")
    if lines and not lines[-1].endswith("ready"):
        lines.append("        fix: jupyter-exec doctor --fix-runtime (prints the daemon.json entry)")
    return lines
