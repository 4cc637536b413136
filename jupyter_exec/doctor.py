"""``jupyter-exec doctor`` / ``%jx doctor``: which backends work here, why not, how to fix;
and the administrator's policy in effect."""

from __future__ import annotations

from .backends.container.report import engine_report
from .backends.factory import availability_report, choose
from .errors import BackendUnavailableError, PolicyError
from .policy import Policy, load_policy, policy_report

__all__ = ["diagnose"]


def diagnose(policy: Policy | None = None) -> tuple[str, bool]:
    """A readable report and whether a sandbox (not just ``local``) can run here.

    ``policy`` is the one a kernel holds (default: the files as they are now).
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
    lines.append(policy_report(policy))
    return "\n".join(lines), ok
