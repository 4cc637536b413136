"""``jupyter-exec doctor`` / ``%jx doctor``: which backends work here, why not, how to fix."""

from __future__ import annotations

from .backends.factory import availability_report, resolve_name
from .errors import BackendUnavailableError

__all__ = ["diagnose"]


def diagnose() -> tuple[str, bool]:
    """A readable report and whether a sandbox (not just ``local``) can run here."""
    lines = []
    for name, availability in availability_report().items():
        mark = "ok  " if availability.ok else "FAIL"
        lines.append(f"{mark} {name:8} {availability.reason}".rstrip())
        if availability.fix:
            lines.append(f"              fix: {availability.fix}")
        lines.extend(f"              note: {note}" for note in availability.notes)
    try:
        default = resolve_name("auto")
        lines.append(f"%%sandbox uses: {default}")
        ok = True
    except BackendUnavailableError as error:
        lines.append(f"%%sandbox has no sandbox to use: {error}")
        ok = False
    return "\n".join(lines), ok
