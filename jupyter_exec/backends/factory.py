"""Backend names to backend classes, what ``auto`` picks, and the builder of a stored env.

``auto`` prefers the strongest isolation that works here: a container when an engine
answers (rootless Podman or Docker, or a rootful one; see ``container.discovery``), else
seccomp. It never falls back to an unconfined process on its own: ``local`` must be
asked for by name. The names themselves (``docker`` is another name of ``container``)
are ``names``'s, which the policy and the options read without loading a backend. With a
broker configured (``ExecConfig.broker``), ``container`` is the broker's
(``broker.client.BrokerBackend``): container runs go there and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection

from jupyter_exec.config import ExecConfig
from jupyter_exec.envs.builder import EnvBuilder
from jupyter_exec.envs.venv import VenvBuilder
from jupyter_exec.errors import BackendUnavailableError, JupyterExecError
from jupyter_exec.policy import Policy

from .base import Availability, ExecutorBackend
from .broker.client import broker_address, brokered
from .container import ContainerBackend
from .container.envbuilder import ImageEnvBuilder
from .names import ALIASES, AUTO_ORDER, canonical
from .process import LocalBackend, SeccompBackend
from .raycluster import RayBackend

__all__ = [
    "BACKENDS",
    "availability_report",
    "backend_class",
    "choose",
    "env_builder_for",
    "reap_all",
    "resolve_name",
]

BACKENDS: dict[str, type[ExecutorBackend]] = {
    cls.name: cls for cls in (LocalBackend, SeccompBackend, RayBackend, ContainerBackend)
}  # in ``names.NAMES``'s order
_ENV_BUILDERS: dict[str, type[VenvBuilder] | type[ImageEnvBuilder]] = {
    VenvBuilder.kind: VenvBuilder,
    ImageEnvBuilder.kind: ImageEnvBuilder,
}


def backend_class(name: str, config: ExecConfig | None = None) -> type[ExecutorBackend]:
    """The class that runs ``name``'s runs: the broker's client for ``container`` when ``config``
    (else the running application's configuration) names a broker."""
    try:
        found = BACKENDS[canonical(name)]
    except KeyError:
        names = ", ".join([*BACKENDS, *(f"{alias} (= {real})" for alias, real in ALIASES.items())])
        raise BackendUnavailableError(name, "no such backend", f"choose one of: auto, {names}") from None
    address = broker_address(config) if found is ContainerBackend else ""
    return brokered(address) if address else found


def resolve_name(name: str, allowed: Collection[str] | None = None, config: ExecConfig | None = None) -> str:
    """The backend ``name`` stands for (``auto`` resolved), or the error saying why none.

    ``auto`` considers only the ``allowed`` backends (the administrator's policy; None: all).
    """
    if name != "auto":
        return backend_class(name).name
    reasons = []
    for candidate in AUTO_ORDER:
        if allowed is not None and candidate not in allowed:
            reasons.append(f"{candidate}: not allowed by the administrator's policy")
            continue
        availability = backend_class(candidate, config).availability()
        if availability.ok:
            return candidate
        reasons.append(f"{candidate}: {availability.reason}")
    local = allowed is None or "local" in allowed
    raise BackendUnavailableError(
        "auto",
        "no sandbox works here (" + "; ".join(reasons) + ")",
        "run `jupyter-exec doctor` for fixes"
        + (", or pass --backend local for an unconfined process" if local else ""),
    )


def choose(name: str, policy: Policy, config: ExecConfig | None = None) -> str:
    """The backend ``name`` stands for under ``policy`` (``auto``: the strongest that works here
    among those it allows); a broken policy, or a backend it does not allow, is refused."""
    policy.refuse_if_broken()
    resolved = resolve_name(name, policy.allowed_backends, config)
    policy.require("backends", resolved, f"the {resolved} backend")
    return resolved


def availability_report(config: ExecConfig | None = None) -> dict[str, Availability]:
    return {name: backend_class(name, config).availability() for name in BACKENDS}


def reap_all() -> dict[str, int]:
    """What each backend's reaper removed of dead kernels' leftovers (a reaper shared by
    several backends runs once)."""
    reaped: dict[str, int] = {}
    seen = set()
    for name, cls in BACKENDS.items():
        reaper = cls.reap.__func__  # type: ignore[attr-defined]
        if reaper not in seen:
            seen.add(reaper)
            reaped[name] = cls.reap()
    return reaped


def env_builder_for(target: str) -> EnvBuilder:
    """The builder of envs made for ``target`` (``EnvBuilder.target``), to delete one."""
    kind = target.partition(":")[0]
    if kind not in _ENV_BUILDERS:
        raise JupyterExecError(f"an env for {target!r}: no builder of {kind!r} envs here")
    return _ENV_BUILDERS[kind].for_target(target)
