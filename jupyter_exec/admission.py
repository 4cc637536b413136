"""Admission: the one place where what a run asks for becomes what it may run with.

``admit(spec, backend, policy, defaults)`` is called by ``Manager.run``, by ``map`` and by
the broker, before anything is recorded or started, and answers with an ``AdmittedSpec``
or refuses. In order:

1. the policy: a broken one refuses every run, and the backend must be one it allows;
2. the image the run starts from (its runtime env's, else the backend's): refused on a
   backend that runs no images, and unless the policy's allow-lists admit it;
3. the backend's own options (``ExecutorBackend.admit``: Ray's reservations and address,
   the container runtime the policy forces);
4. the limits: the user's over the kernel's ``defaults`` that the backend enforces (none
   where the run is admitted again where it goes, at a broker: the defaults travel apart),
   under the policy's ceilings (an asked limit above one is refused; an unset cap the
   backend enforces becomes the ceiling); a limit the backend cannot enforce is refused,
   in the backend's words (``ExecutorBackend.refusal``), never ignored;
5. the run's environment variables: its runtime env's, under its own ``--env``.

A later cell of a sandbox session (``--session NAME``; ``session``: its first cell's admitted
spec) takes the session's limits of scope ``session`` (memory, processes, network ...), mounts
and runtime env where it names none, and is refused where it names others: they are the
session's, set by its first cell; only limits of scope ``cell`` (the wall clock) are its own.

It reads nothing but its arguments: ``BackendFacts`` is the little it needs to know of a
backend, so the same request, policy and defaults are admitted the same way in a kernel and
at a broker.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BackendUnavailableError, SpecError
from .limits import LIMITS
from .spec import Limits, RunSpec

if TYPE_CHECKING:
    from .backends.base import ExecutorBackend
    from .policy import Policy

__all__ = ["AdmittedSpec", "BackendFacts", "admit"]


@dataclass(frozen=True)
class BackendFacts:
    """What admission needs to know of a backend (``of`` reads it off one)."""

    name: str
    enforced: frozenset[str] | None  # the limits it enforces (None: all)
    image: str | None  # what its runs start from when their env names none; None: it runs no images
    options: Callable[[RunSpec, Policy], RunSpec | None]  # its own options under the policy (its ``admit``)
    refusal: Callable[[Limits, tuple[str, ...]], tuple[str, str]]  # why it cannot keep limits, and the fix
    admitted_again: bool = False  # where its runs go (a broker) admits them again under its own policy

    @classmethod
    def of(cls, backend: ExecutorBackend) -> BackendFacts:
        return cls(
            backend.name,
            backend.enforced_limits,
            backend.image(None),
            type(backend).admit,
            backend.refusal,
            backend.admitted_again,
        )


@dataclass(frozen=True)
class AdmittedSpec(RunSpec):
    """A ``RunSpec`` as admitted: its backend resolved, its limits merged and bounded, what the
    policy forces applied, its env's variables joined to its own. Only ``admit`` makes one."""

    image: str | None = None  # the image it starts from (checked against the policy); None: none


def admit(
    spec: RunSpec, backend: BackendFacts, policy: Policy, defaults: Limits, session: RunSpec | None = None
) -> AdmittedSpec:
    """``spec`` admitted to run on ``backend`` under ``policy`` with the kernel's ``defaults``, in the
    running ``session`` if any (see the module docstring); ``PolicyError``, ``SpecError`` or
    ``BackendUnavailableError`` otherwise."""
    if session is not None:
        spec = _in_session(spec, session)
    policy.refuse_if_broken()
    policy.require("backends", backend.name, f"the {backend.name} backend")
    env = spec.runtime_env
    if env is not None and env.image and backend.image is None:
        raise SpecError(
            f"image {env.image}: only the container backend runs images, and this run is on {backend.name}, "
            "which runs cells on its own Python; use %%sandbox --backend container, or drop the image"
        )
    image = (env.image if env is not None else None) or backend.image
    policy.check_image(image)
    if policy.sources:  # no policy file: the backend's options have nothing to pass
        spec = backend.options(spec, policy) or spec
    limits, unenforced = _limits(spec.limits, defaults, backend.enforced, backend.admitted_again, policy)
    if unenforced:
        raise BackendUnavailableError(backend.name, *backend.refusal(limits, unenforced))
    if spec.session is not None and spec.cache is not None:
        raise SpecError(
            f"--cache with --session {spec.session}: a session cell's result depends on the session's state, "
            "so it is never served from the cache; drop --cache"
        )
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(RunSpec)}
    admitted = AdmittedSpec(
        **{
            **fields,
            "backend": backend.name,
            "limits": limits,
            "env": {**env.env_vars, **spec.env} if env is not None else spec.env,
        },
        image=image,
    )
    if session is not None:
        _join(admitted, session)
    return admitted


@functools.lru_cache(maxsize=64)
def _limits(
    asked: Limits, defaults: Limits, enforced: frozenset[str] | None, admitted_again: bool, policy: Policy
) -> tuple[Limits, tuple[str, ...]]:
    """The run's limits (see the module docstring) and those of them the backend cannot enforce;
    worked out once per combination (a refusal by the policy raises, and is not kept)."""
    if admitted_again:
        return policy.bound(asked, asked, frozenset()), ()
    limits = policy.bound(asked, asked.merged_over(defaults.only(enforced)), enforced)
    unenforced = (
        ()
        if enforced is None
        else tuple(
            key
            for key, limit in LIMITS.items()
            # a switch left on asks nothing a backend that cannot turn it off does not give anyway;
            # a host list asks it to keep the rest out
            if key not in enforced
            and getattr(limits, key) is not None
            and not (limit.kind in ("switch", "hosts") and isinstance(getattr(limits, key), bool))
        )
    )
    return limits, unenforced


def _in_session(spec: RunSpec, session: RunSpec) -> RunSpec:
    """``spec`` with what it leaves unnamed of its session's own taken from ``session``."""
    own = Limits(**{key: getattr(session.limits, key) for key, limit in LIMITS.items() if limit.scope == "session"})
    return dataclasses.replace(
        spec,
        limits=spec.limits.merged_over(own),
        mounts=spec.mounts or session.mounts,
        runtime_env=spec.runtime_env or session.runtime_env,
    )


def _join(spec: AdmittedSpec, session: RunSpec) -> None:
    """Refuse a cell of a running session that asks for what differs from the session's own."""
    name = spec.session
    for key, limit in LIMITS.items():
        if limit.scope == "session" and getattr(spec.limits, key) != getattr(session.limits, key):
            had = getattr(session.limits, key)
            shown = "unset" if had is None else f"{limit.flag} {limit.show(had)}"
            raise SpecError(
                f"{limit.flag}: session {name} runs with {shown}, set by its first cell; a session's limits are "
                f"its own: drop the option here, or %jx end {name} and start it again with the new one"
            )
    for what, asked, had in (
        ("--mount", spec.mounts, session.mounts),
        ("its runtime env (--pip, --image, ...)", spec.runtime_env, session.runtime_env),
    ):
        if asked != had:
            raise SpecError(
                f"{what}: session {name} was started with other ones by its first cell; drop them here, "
                f"or %jx end {name} and start it again"
            )
