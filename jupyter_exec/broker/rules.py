"""The broker's policy file: a kernel's policy for everyone, plus quotas, the machine's capacity,
and sections per group and per user.

::

    memory: 2g              # any key of a kernel's policy (docs/policy.md): ceilings, allow-lists, runtime
    gpus: 0
    quotas:                 # what one user may hold at once
      runs: 2               #   concurrent runs
      memory: 4g            #   the total --mem of their running sandboxes
      gpus: 0               #   the total GPUs of their running sandboxes
      queue: 20             #   runs waiting for room (more are refused)
      when_full: queue      #   or refuse: a run that cannot start at once is refused
      rate: 600             #   requests a minute (bursts of a tenth of that)
    capacity:               # the whole machine: beyond it, users' runs wait their turn, fairly
      runs: 8
      memory: 16g
    groups:                 # in file order, each overriding what comes before it
      students: {runtime: runsc}
      staff: {gpus: 2, quotas: {gpus: 2, runs: 4}}
    users:                  # last: a user's own section overrides their groups'
      alice: {memory: 8g}

A section replaces the keys it names (a staff member gets 2 GPUs where the top says 0): it is
the administrator's word for that group, not a file to combine to the strictest. The file is
the broker's, read by the broker: nothing in a kernel (``JX_POLICY``, ``%config``, its
environment) reaches it. A file that cannot be read refuses every run (fail closed), as a
kernel's broken policy does.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from jupyter_exec.errors import PolicyError, SpecError
from jupyter_exec.policy import Policy, parse_policy, read_policy
from jupyter_exec.units import parse_count, parse_size

__all__ = ["Capacity", "Quotas", "Rules", "read_rules"]

_SECTION_KEYS = ("quotas", "capacity", "groups", "users")


def _size(value: Any, where: str) -> int:
    return parse_size(value, where)


def _count(value: Any, where: str) -> int:
    return parse_count(value, where, allow_zero=True, example="2")


def _positive(value: Any, where: str) -> int:
    return parse_count(value, where, example="600")


def _when_full(value: Any, where: str) -> str:
    if value not in ("queue", "refuse"):
        raise SpecError(f"{where}: expected queue or refuse, got {value!r}")
    return str(value)


_QUOTA_KEYS = {
    "runs": _positive,
    "memory": _size,
    "gpus": _count,
    "queue": _count,
    "when_full": _when_full,
    "rate": _positive,
}
_CAPACITY_KEYS = {"runs": _positive, "memory": _size, "gpus": _count}


@dataclass(frozen=True)
class Quotas:
    """What one user may hold at once (None: no quota of that kind)."""

    runs: int | None = None
    memory: int | None = None  # bytes
    gpus: int | None = None
    queue: int = 100
    when_full: str = "queue"
    rate: int = 600  # requests a minute

    def overridden(self, data: Any, where: str) -> Quotas:
        return replace(self, **_read(data, where, _QUOTA_KEYS))


@dataclass(frozen=True)
class Capacity:
    """The whole machine's room for running sandboxes (None: no bound of that kind)."""

    runs: int | None = None
    memory: int | None = None
    gpus: int | None = None


def _read(data: Any, where: str, keys: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected keys like {', '.join(keys)}, got {data!r}")
    unknown = set(data) - set(keys)
    if unknown:
        raise SpecError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(keys)}")
    return {key: keys[key](value, f"{where}.{key}") for key, value in data.items()}


@dataclass(frozen=True, eq=False)
class Rules:
    """The broker's policy file as read (see the module docstring)."""

    source: str
    base: Mapping[str, Any] = field(default_factory=dict)  # the kernel-policy keys at the top
    quotas: Quotas = Quotas()
    capacity: Capacity = Capacity()
    groups: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    broken: str | None = None

    def for_user(self, user: str, groups: tuple[str, ...]) -> tuple[Policy, Quotas]:
        """The policy and quotas of ``user`` (a member of ``groups``), worked out once."""
        return _effective(self, user, groups)


@functools.lru_cache(maxsize=1024)
def _effective(rules: Rules, user: str, groups: tuple[str, ...]) -> tuple[Policy, Quotas]:
    if rules.broken:
        return Policy(sources=(rules.source,), broken=rules.broken), rules.quotas
    merged, quotas = dict(rules.base), rules.quotas
    sections = [s for name, s in rules.groups if name in groups] + [rules.users.get(user, {})]
    for section in sections:
        merged.update({k: v for k, v in section.items() if k != "quotas"})
        if "quotas" in section:
            quotas = quotas.overridden(section["quotas"], rules.source)
    return parse_policy(merged, rules.source), quotas


def _section(data: Any, where: str, source: str) -> Mapping[str, Any]:
    """One group's or user's section, checked now (a bad key fails the file, not a run later)."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected keys like `memory: 2g`, got {data!r}")
    parse_policy({k: v for k, v in data.items() if k != "quotas"}, f"{source} ({where})")
    if "quotas" in data:
        Quotas().overridden(data["quotas"], f"{where}.quotas")
    return dict(data)


def parse_rules(data: Any, source: str) -> Rules:
    """The rules in a file's parsed content; ``PolicyError`` names the file, the key and the fix."""
    data = data or {}
    if not isinstance(data, dict):
        raise PolicyError(f"policy {source}: expected keys like `memory: 2g` at the top level", source)
    try:
        base = {k: v for k, v in data.items() if k not in _SECTION_KEYS}
        parse_policy(base, source)
        groups = data.get("groups") or {}
        users = data.get("users") or {}
        if not isinstance(groups, dict) or not isinstance(users, dict):
            raise SpecError(f"policy {source}: groups and users are sections by name, e.g. `staff: {{gpus: 2}}`")
        return Rules(
            source,
            base,
            Quotas().overridden(data.get("quotas") or {}, "quotas"),
            Capacity(**_read(data.get("capacity") or {}, "capacity", _CAPACITY_KEYS)),
            tuple((str(name), _section(s, f"groups.{name}", source)) for name, s in groups.items()),
            {str(name): _section(s, f"users.{name}", source) for name, s in users.items()},
        )
    except PolicyError:
        raise
    except SpecError as error:
        message = str(error) if str(error).startswith("policy ") else f"policy {source}, {error}"
        raise PolicyError(message, source) from None


def read_rules(path: Path) -> Rules:
    """The rules in ``path``; ``PolicyError`` if it cannot be read (the caller decides: the broker
    will not start on a broken file, and a reload that breaks refuses every run)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        raise PolicyError(read_policy(path).broken or f"policy {path}: cannot read it", str(path)) from None
    return parse_rules(data, str(path))
