"""``jupyter-exec doctor`` / ``%jx doctor``: which backends work here, why not, how to fix;
the run store's health and free space; and the administrator's policy in effect."""

from __future__ import annotations

from pathlib import Path

from .backends.container.report import engine_report
from .backends.factory import availability_report, choose
from .config import ExecConfig, application_config
from .errors import BackendUnavailableError, PolicyError
from .policy import Policy, load_policy, policy_report
from .store.filesystems import store_location
from .store.health import inspect

__all__ = ["diagnose"]


def diagnose(policy: Policy | None = None, config: ExecConfig | None = None) -> tuple[str, bool]:
    """A readable report, and whether a sandbox (not just ``local``) can run here with a healthy store.

    ``policy`` and ``config`` are the ones a kernel holds (default: the files as they are now).
    """
    policy = policy or load_policy()
    lines = []
    for name, availability in availability_report().items():
        mark = "ok  " if availability.ok else "FAIL"
        lines.append(f"{mark} {name:8} {availability.reason}".rstrip())
        if availability.fix:
            lines.append(f"              fix: {availability.fix}")
        lines.extend(f"              note: {note}" for note in availability.notes)
    lines.extend(engine_report())
    try:
        default = choose("auto", policy)
        lines.append(f"%%sandbox uses: {default}")
        ok = True
    except (BackendUnavailableError, PolicyError) as error:
        lines.append(f"%%sandbox has no sandbox to use: {error}")
        ok = False
    ok = _store_report(config or ExecConfig(config=application_config()), lines) and ok
    lines.append(policy_report(policy))
    return "\n".join(lines), ok


def _store_report(config: ExecConfig, lines: list[str]) -> bool:
    """The run store's lines (health, free space, where it is kept and why); whether it is healthy."""
    path, moved_by = store_location(Path(config.data_dir))
    health = inspect(path, min_free=config.min_free_bytes(), thorough=False)
    lines.append(f"{'ok  ' if health.ok else 'FAIL'} store    {health.summary()}")
    if moved_by is not None:
        lines.append(
            f"              note: kept on this machine: {config.data_dir} is on {moved_by.describe()}, which "
            "does not lock files across hosts; runs from other hosts are in their own stores"
        )
    lines.extend(f"              note: {note}" for note in health.notes())
    lines.extend(f"              fix: {problem}" for problem in health.problems)
    return health.ok
