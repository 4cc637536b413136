"""Backend names to backend classes, and what ``auto`` picks.

``auto`` prefers the strongest isolation that works here: Docker when a daemon answers,
else seccomp. It never falls back to an unconfined process on its own: ``local`` must be
asked for by name.
"""

from __future__ import annotations

from typing import Collection

from ..errors import BackendUnavailableError
from .base import Availability, ExecutorBackend
from .docker import DockerBackend
from .process import LocalBackend, SeccompBackend
from .ray import RayBackend

__all__ = ["BACKENDS", "AUTO_ORDER", "availability_report", "backend_class", "resolve_name"]

BACKENDS: dict[str, type[ExecutorBackend]] = {
    LocalBackend.name: LocalBackend,
    SeccompBackend.name: SeccompBackend,
    RayBackend.name: RayBackend,
    DockerBackend.name: DockerBackend,
}
AUTO_ORDER = ("docker", "seccomp")


def backend_class(name: str) -> type[ExecutorBackend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailableError(name, "no such backend", f"choose one of: auto, {', '.join(BACKENDS)}") from None


def resolve_name(name: str, allowed: Collection[str] | None = None) -> str:
    """The backend ``name`` stands for (``auto`` resolved), or the error saying why none.

    ``auto`` considers only the ``allowed`` backends (the administrator's policy; None: all).
    """
    if name != "auto":
        backend_class(name)
        return name
    reasons = []
    for candidate in AUTO_ORDER:
        if candidate not in BACKENDS:
            continue
        if allowed is not None and candidate not in allowed:
            reasons.append(f"{candidate}: not allowed by the administrator's policy")
            continue
        availability = BACKENDS[candidate].availability()
        if availability.ok:
            return candidate
        reasons.append(f"{candidate}: {availability.reason}")
    local = allowed is None or "local" in allowed
    raise BackendUnavailableError("auto", "no sandbox works here (" + "; ".join(reasons) + ")",
                                  "run `jupyter-exec doctor` for fixes" +
                                  (", or pass --backend local for an unconfined process" if local else ""))


def availability_report() -> dict[str, Availability]:
    return {name: cls.availability() for name, cls in BACKENDS.items()}
