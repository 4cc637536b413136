"""The administrator's policy: ceilings and allow-lists that users cannot raise.

A shared deployment (a teaching hub, a group's Ray cluster) needs limits that hold
whatever a user sets: ``ExecConfig`` and ``JX_*`` variables are the user's, so the policy
lives elsewhere and is read once per process (a kernel reads it when the extension loads).

Where it comes from, and why a user cannot loosen it:

- ``/etc/jupyter-exec/policy.yaml`` (or ``.yml`` / ``.json``): the machine's, root-owned;
- ``{sys.prefix}/etc/jupyter-exec/policy.yaml``: the Python environment's, for a shared
  environment an administrator owns (a user's own venv gives the user this file too);
- ``JX_POLICY=FILE``: one more file, which a user may set.

Every file found is read and they are combined to the strictest: the lowest of each
ceiling, and a choice (backend, image, Ray address) must pass every allow-list that
names its kind. A forced value (``runtime: runsc``: every container runs under gVisor)
is given to every run of its kind, and a run asking for another is refused; two files
forcing different values make the policy broken. So adding a file can only take
permissions away, and the one file a user controls (``JX_POLICY``) can tighten the
policy, never loosen it. There is no setting that turns the policy off.

A file that cannot be read or has an unknown key or a bad value does not mean "no policy":
the process's policy is then *broken* and every run is refused with the file, the key and
the fix (fail closed); ``doctor`` says so.

What it governs is what jupyter-exec runs on the user's behalf (``Manager.run`` checks
every cell and every ``map``; a backend's own options through its ``admit``). It cannot
stop code the user runs directly in the kernel: the kernel's own container limits are
for that. A ``Policy`` is data: it answers ``allows``/``require``/``at_most``/``bound``
and never talks to a daemon (the Manager resolves ``auto``).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .backends.names import ALIASES, NAMES, canonical
from .errors import PolicyError, SpecError
from .hosts import HostList
from .limits import LIMITS, Limit
from .spec import Limits
from .units import format_size, parse_count, parse_number, parse_size

__all__ = ["POLICY_DIRS", "POLICY_ENV", "Policy", "load_policy", "parse_policy", "policy_in_effect", "policy_report"]

POLICY_DIRS = (Path("/etc/jupyter-exec"), Path(sys.prefix) / "etc" / "jupyter-exec")
POLICY_NAMES = ("policy.yaml", "policy.yml", "policy.json")
POLICY_ENV = "JX_POLICY"


def _number(value: Any, where: str, whole: bool = False, zero: bool = False) -> float:
    """A number from the file: a whole one for counts; more than 0 unless ``zero`` is allowed."""
    if whole:
        return parse_count(value, where, allow_zero=zero, example="2")
    return parse_number(value, where, allow_zero=zero, example="2 or 0.5")


@dataclass(frozen=True)
class _Ceiling:
    """How one ceiling key that is not a limit is read from a file and shown back."""

    flag: str  # what the user types
    read_ceiling: Callable[[Any, str], float]  # (value in the file, "policy FILE, key K") -> number
    show_ceiling: Callable[[float], str]  # number -> as a user would type it


#: Every ceiling key: one per limit (the limits table's rows that have one), then the backends' own.
_CEILINGS: dict[str, _Ceiling | Limit] = {
    **{key: limit for key, limit in LIMITS.items() if limit.ceiling},
    "ray_num_cpus": _Ceiling("--num-cpus", _number, "{:g}".format),
    "ray_memory": _Ceiling("--memory", parse_size, format_size),
    "warm_containers": _Ceiling(
        "DockerConfig.pool_max", functools.partial(_number, whole=True, zero=True), "{:g}".format
    ),
}
#: The limits whose ceiling also applies to a run that left them unset (the most a run may use).
_CAPS = tuple(key for key, limit in LIMITS.items() if limit.ceiling and limit.kind == "cap")
_ALLOW_KEYS = ("backends", "images", "ray_addresses")
_HOST_KEYS = ("network", "network_default")  # network: a list form beside the switch; the list cells get
_FORCED_KEYS = ("runtime",)  # a value every run gets, whatever it asks (the container runtime)


@dataclass(frozen=True)
class Ceiling:
    """The most a run may ask for of one kind (bytes, seconds, CPUs, a count; network 0/1)."""

    value: float
    source: str  # the file that set it


@dataclass(frozen=True)
class AllowList:
    """Names or glob patterns one file allows for one kind of choice."""

    patterns: tuple[str, ...]
    source: str

    def allows(self, choice: str) -> bool:
        return any(fnmatch.fnmatchcase(choice, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class Forced:
    """A value the administrator imposes on every run of one kind (``runtime: runsc``)."""

    value: str
    source: str


@dataclass(frozen=True)
class Hosts:
    """A host list one file sets: the hosts a user may name (``network: [...]``), or the list a
    run that asks for no network gets (``network_default: [...]``)."""

    hosts: HostList
    source: str


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a key of the per-run limits cache
class Policy:
    """Ceilings and allow-lists from the files read; the empty policy allows everything."""

    ceilings: Mapping[str, Ceiling] = field(default_factory=lambda: MappingProxyType({}))
    allow: Mapping[str, tuple[AllowList, ...]] = field(default_factory=lambda: MappingProxyType({}))
    sources: tuple[str, ...] = ()  # the files it was read from
    broken: str | None = None  # why a file could not be read: every run is refused
    forced: Mapping[str, Forced] = field(default_factory=lambda: MappingProxyType({}))
    hosts: tuple[Hosts, ...] = ()  # each file's list of the hosts a run may name: every one must allow them
    default_hosts: Hosts | None = None  # what a run that names no network gets (the strictest file's)

    def strictest(self, other: Policy) -> Policy:
        """Both policies at once: the lower of each ceiling, every allow-list of both; two files
        forcing different values of one key make a broken policy (nothing can satisfy both)."""
        ceilings = dict(self.ceilings)
        for key, ceiling in other.ceilings.items():
            if key not in ceilings or ceiling.value < ceilings[key].value:
                ceilings[key] = ceiling
        allow = {key: self.allow.get(key, ()) + other.allow.get(key, ()) for key in {*self.allow, *other.allow}}
        forced, broken = dict(self.forced), self.broken or other.broken
        for key, value in other.forced.items():
            mine = forced.setdefault(key, value)
            if mine.value != value.value and not broken:
                broken = (
                    f"{mine.source} and {value.source} force different {key}s ({mine.value}, {value.value}); "
                    "make them agree"
                )
        default = other.default_hosts or self.default_hosts
        if self.default_hosts and other.default_hosts and self.default_hosts != other.default_hosts and not broken:
            broken = (
                f"{self.default_hosts.source} and {other.default_hosts.source} set different network_default "
                "lists; make them agree"
            )
        return Policy(
            MappingProxyType(ceilings),
            MappingProxyType(allow),
            self.sources + other.sources,
            broken,
            MappingProxyType(forced),
            self.hosts + other.hosts,
            default,
        )

    @functools.cached_property
    def allowed_backends(self) -> frozenset[str] | None:
        """The backends every allow-list admits (None: no list, all are allowed); worked out once."""
        lists = self.allow.get("backends", ())
        return frozenset(name for name in NAMES if all(a.allows(name) for a in lists)) if lists else None

    def refuse_if_broken(self) -> None:
        """A policy file that cannot be read refuses every run (fail closed)."""
        if self.broken:
            raise PolicyError(f"every run is refused until the administrator's policy is fixed: {self.broken}")

    def allows(self, kind: str, choice: str) -> bool:
        """Whether every allow-list of ``kind`` (backends, images, ray_addresses) admits ``choice``."""
        return all(allowed.allows(choice) for allowed in self.allow.get(kind, ()))

    def require(self, kind: str, choice: str, what: str) -> None:
        """Refuse ``choice`` (``what`` names it in the message) unless every allow-list of ``kind`` admits it."""
        for allowed in self.allow.get(kind, ()):
            if not allowed.allows(choice):
                raise PolicyError(
                    f"{what} is not allowed by the administrator's policy ({allowed.source}); "
                    f"allowed: {', '.join(allowed.patterns) or 'none'}",
                    allowed.source,
                )

    def check_image(self, image: str | None) -> None:
        """Refuse a container image no allow-list admits (None: the backend runs no image)."""
        if image is not None:
            self.require("images", image, f"image {image}")

    def bound(self, asked: Limits, merged: Limits, lowered: frozenset[str] | None) -> Limits:
        """``merged`` (the run's limits over the defaults) under the ceilings.

        A limit the user asked for above a ceiling is refused; a cap the user left unset (a
        default above the ceiling, or none) becomes the ceiling, where it is in ``lowered`` (the
        limits the backend enforces; None: all).
        """
        for key, limit in LIMITS.items():
            if limit.ceiling:
                value = getattr(asked, key)
                self.at_most(key, limit.flag, limit.amount(value), None if value is None else limit.show(value))
        self.check_hosts(asked.network)
        if self.default_hosts and merged.network is False and (lowered is None or "network" in lowered):
            merged = replace(merged, network=self.default_hosts.hosts)
        lowering: dict[str, Any] = {  # each a value of its Limits field's type (parse_size: int)
            key: ceiling.value
            for key, ceiling in self.ceilings.items()
            if key in _CAPS
            and (lowered is None or key in lowered)
            and (getattr(merged, key) is None or getattr(merged, key) > ceiling.value)
        }
        return replace(merged, **lowering) if lowering else merged

    def check_hosts(self, network: bool | HostList) -> None:
        """Refuse ``--network`` alone where a file lists the hosts a run may name, and a list
        naming a host outside one of those lists."""
        for allowed in self.hosts:
            if network is True:
                raise PolicyError(
                    "--network alone (every host) is not allowed by the administrator's policy "
                    f"(policy {allowed.source}); name the hosts, among: {allowed.hosts}",
                    allowed.source,
                )
            outside = network.within(allowed.hosts) if isinstance(network, HostList) else None
            if outside is not None:
                raise PolicyError(
                    f"--network {outside}: not among the hosts the administrator's policy allows "
                    f"(policy {allowed.source}): {allowed.hosts}",
                    allowed.source,
                )

    def capped(self, key: str, value: int) -> int:
        """A setting (not a run's option) under the ceiling ``key``: the ceiling where it is lower."""
        ceiling = self.ceilings.get(key)
        return value if ceiling is None else min(value, int(ceiling.value))

    def at_most(self, key: str, flag: str, value: float | None, shown: str | None = None) -> None:
        """Refuse ``value`` of option ``flag`` above the ceiling ``key`` (None: not asked for)."""
        ceiling = self.ceilings.get(key)
        if ceiling is None or value is None or value <= ceiling.value:
            return
        row = _CEILINGS[key]
        if isinstance(row, Limit) and row.kind in ("switch", "hosts"):
            raise PolicyError(
                f"{flag} is not allowed by the administrator's policy ({ceiling.source}); drop {flag}", ceiling.source
            )
        most = row.show_ceiling(ceiling.value)
        asked = row.show_ceiling(value) if shown is None else shown
        fix = f"ask for at most {most}" if ceiling.value else f"drop {flag}"
        raise PolicyError(
            f"{flag} {asked} is above the administrator's ceiling of {most} (policy {ceiling.source}); {fix}",
            ceiling.source,
        )


def parse_policy(data: Any, source: str) -> Policy:
    """A policy from a file's parsed content; ``PolicyError`` names the file, the key and the fix."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(
            f"policy {source}: expected keys like `memory: 2g` at the top level, got a {type(data).__name__}", source
        )
    ceilings: dict[str, Ceiling] = {}
    allow: dict[str, tuple[AllowList, ...]] = {}
    forced: dict[str, Forced] = {}
    hosts: dict[str, Hosts] = {}
    known = [*_CEILINGS, *_ALLOW_KEYS, *_FORCED_KEYS, *_HOST_KEYS[1:]]
    for key, value in data.items():
        where = f"policy {source}, key {key}"
        try:
            if key in _HOST_KEYS and (isinstance(value, list) or key == "network_default"):
                hosts[key] = Hosts(_host_list(value, where), source)
            elif key in _CEILINGS:
                ceilings[key] = Ceiling(_CEILINGS[key].read_ceiling(value, where), source)
            elif key in _ALLOW_KEYS:
                allow[key] = (AllowList(_patterns(key, value, where), source),)
            elif key in _FORCED_KEYS:
                if not isinstance(value, str) or not value.strip():
                    raise SpecError(f"{where}: expected one name, e.g. runsc, got {value!r}")
                forced[key] = Forced(value.strip(), source)
            else:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise SpecError(f"policy {source}: unknown key {key!r}; {hint}known keys: {', '.join(known)}")
        except SpecError as error:
            raise PolicyError(str(error), source) from None
    default = hosts.get("network_default")
    listed = hosts.get("network")
    outside = default.hosts.within(listed.hosts) if default and listed else None
    if outside is not None or (default and ceilings.get("network") and not ceilings["network"].value):
        raise PolicyError(f"policy {source}, key network_default: {outside or 'a list'} is beyond key network", source)
    return Policy(
        MappingProxyType(ceilings),
        MappingProxyType(allow),
        (source,),
        forced=MappingProxyType(forced),
        hosts=(listed,) if listed else (),
        default_hosts=default,
    )


def _host_list(value: Any, where: str) -> HostList:
    """A list of hosts from a file, each entry as ``--network`` reads it."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item.strip() for item in value):
        raise SpecError(
            f"{where}: expected a list of hosts, e.g. [index.example.org, files.example.net], got {value!r}"
        )
    return HostList.parse(",".join(value), where)


def _patterns(key: str, value: Any, where: str) -> tuple[str, ...]:
    example = {
        "backends": "[seccomp, container]",
        "images": '["jupyter-exec/*"]',
        "ray_addresses": '[local, "ray://head:10001"]',
    }[key]
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise SpecError(f"{where}: expected a list of names, e.g. {example}, got {value!r}")
    patterns = tuple(item.strip() for item in value)
    if key != "backends":
        return patterns
    unknown = [name for name in patterns if canonical(name) not in NAMES]
    if unknown:
        names = ", ".join([*NAMES, *ALIASES])
        raise SpecError(f"{where}: unknown backend {unknown[0]!r}; choose from {names}")
    return tuple(dict.fromkeys(canonical(name) for name in patterns))  # docker is the container backend


def read_policy(path: Path) -> Policy:
    """One file's policy; if it cannot be read, a broken policy that refuses every run."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return parse_policy(data, str(path))
    except PolicyError as error:
        return Policy(sources=(str(path),), broken=str(error))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
            detail = f"{error.problem} at line {error.problem_mark.line + 1}"
        return Policy(sources=(str(path),), broken=f"policy {path}: cannot read it ({detail}); fix the file")


def policy_files(dirs: Sequence[Path] = POLICY_DIRS, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The system files that exist, then the ``JX_POLICY`` file (named, so read even if missing)."""
    found = [directory / name for directory in dirs for name in POLICY_NAMES if (directory / name).is_file()]
    return found + ([Path(environ[POLICY_ENV])] if environ.get(POLICY_ENV) else [])


def load_policy(dirs: Sequence[Path] = POLICY_DIRS, environ: Mapping[str, str] = os.environ) -> Policy:
    """Every policy file found, combined to the strictest."""
    policy = Policy()
    for path in policy_files(dirs, environ):
        policy = policy.strictest(read_policy(path))
    return policy


@functools.lru_cache(maxsize=1)
def policy_in_effect() -> Policy:
    """This process's policy, read once: a kernel keeps the one it started with."""
    return load_policy()


def policy_report(policy: Policy) -> str:
    """What ``%jx policy`` and ``doctor`` show: where the policy came from and what it sets."""
    if not policy.sources:
        looked = ", ".join(str(d / POLICY_NAMES[0]) for d in POLICY_DIRS)
        return f"policy: none (no {looked}; {POLICY_ENV} unset): only the user's own limits apply"
    lines = [
        f"policy: from {', '.join(policy.sources)}"
        + (f" ({POLICY_ENV} can only tighten it)" if os.environ.get(POLICY_ENV) else "")
    ]
    if policy.broken:
        lines.append(f"  BROKEN, every run is refused: {policy.broken}")
    for key, ceiling in policy.ceilings.items():
        row = _CEILINGS[key]
        shown = row.show_ceiling(ceiling.value)
        switch = isinstance(row, Limit) and row.kind in ("switch", "hosts")
        lines.append(f"  {key:14} {shown if switch else 'at most ' + shown}   ({ceiling.source})")
    for key, lists in policy.allow.items():
        lines.extend(f"  {key:14} {', '.join(a.patterns) or 'none'}   ({a.source})" for a in lists)
    for key, forced in policy.forced.items():
        lines.append(f"  {key:14} always {forced.value}   ({forced.source})")
    lines.extend(f"  {'network':14} only {allowed.hosts}   ({allowed.source})" for allowed in policy.hosts)
    if policy.default_hosts:
        lines.append(f"  {'network':14} by default {policy.default_hosts.hosts}   ({policy.default_hosts.source})")
    return "\n".join(lines)
