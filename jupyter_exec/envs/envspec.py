"""``EnvSpec``: what a run's environment needs, as Ray's ``runtime_env`` says it.

Fields: ``pip`` (requirement strings or local wheel paths), ``requirements`` (a file),
``image`` (Docker), ``working_dir`` (copied as the run's working directory),
``py_modules`` (local packages put on ``sys.path``), ``env_vars``, ``excludes``
(patterns left out of working_dir and py_modules) and ``setup_timeout`` (not part of the
hash). Everything is checked on creation, so a malformed spec fails before anything
builds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from jupyter_exec.errors import SpecError
from jupyter_exec.units import parse_duration

__all__ = ["SETUP_TIMEOUT", "EnvSpec", "parse_env"]

SETUP_TIMEOUT = 600.0  # seconds an env's build may take unless its spec says otherwise

_FIELDS = ("pip", "requirements", "image", "working_dir", "py_modules", "env_vars", "excludes", "config")
_LOCAL_SUFFIXES = (".whl", ".tar.gz", ".zip")


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` to a dict; a pair without ``=`` or with a bad name is an error."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME_RE.match(name):
            raise SpecError(f"--env: cannot read {pair!r}; write NAME=VALUE, e.g. --env SEED=1")
        env[name] = value
    return env


def _is_local_path(item: str) -> bool:
    return item.endswith(_LOCAL_SUFFIXES) or item.startswith((".", "/", "~"))


@dataclass(frozen=True)
class EnvSpec:
    pip: tuple[str, ...] = ()
    requirements: Path | None = None
    image: str | None = None
    working_dir: Path | None = None
    py_modules: tuple[Path, ...] = ()
    env_vars: dict[str, str] = field(default_factory=dict)
    excludes: tuple[str, ...] = ()
    setup_timeout: float = SETUP_TIMEOUT

    @classmethod
    def from_options(
        cls,
        *,
        base_dir: Path,
        pip: list[str] | None = None,
        requirements: str | None = None,
        image: str | None = None,
        working_dir: str | None = None,
        py_modules: list[str] | None = None,
        env_vars: dict[str, str] | None = None,
        excludes: list[str] | None = None,
        setup_timeout: Any = None,
    ) -> EnvSpec:
        """Checked spec from user-typed values; relative paths are against ``base_dir``."""

        def local(path: str, option: str) -> Path:
            resolved = (base_dir / Path(path).expanduser()).resolve()
            if not resolved.exists():
                raise SpecError(f"{option}: {resolved} does not exist; fix the path")
            return resolved

        packages = []
        for item in (p.strip() for entry in pip or () for p in entry.split(",")):
            if not item:
                continue
            if _is_local_path(item):
                packages.append(str(local(item, "--pip")))
                continue
            try:
                Requirement(item)
            except InvalidRequirement as error:
                reason = str(error).splitlines()[0]
                raise SpecError(
                    f"--pip: {item!r} is not a requirement ({reason}); write e.g. --pip six==1.16.0"
                ) from None
            packages.append(item)
        modules = tuple(local(m, "--py-modules") for m in py_modules or ())
        for module in modules:
            if module.is_file() and module.suffix != ".py":
                raise SpecError(f"--py-modules: {module} is neither a package directory nor a .py file")
        return cls(
            pip=tuple(packages),
            requirements=local(requirements, "--requirements") if requirements else None,
            image=image or None,
            working_dir=local(working_dir, "--working-dir") if working_dir else None,
            py_modules=modules,
            env_vars=dict(env_vars or {}),
            excludes=tuple(excludes or ()),
            setup_timeout=SETUP_TIMEOUT if setup_timeout is None else parse_duration(setup_timeout, "setup_timeout"),
        )

    @classmethod
    def from_file(cls, path: Path) -> EnvSpec:
        """An env spec from a YAML or JSON file (``--env-spec FILE``), Ray's field names."""
        try:
            text = path.read_text()
        except OSError as error:
            raise SpecError(f"--env-spec: cannot read {path}: {error.strerror}") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as error:  # json.JSONDecodeError, or yaml's own error tree
            kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
            raise SpecError(f"--env-spec: {path} is not valid {kind}: {error}") from None
        if not isinstance(data, dict):
            raise SpecError(f"--env-spec: {path} must hold a mapping of fields ({', '.join(_FIELDS)})")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise SpecError(f"--env-spec: unknown field(s) {sorted(unknown)} in {path}; known: {', '.join(_FIELDS)}")
        pip = data.get("pip") or []
        if isinstance(pip, str) or not all(isinstance(p, str) for p in pip):
            raise SpecError(f"--env-spec: 'pip' in {path} must be a list of requirement strings")
        env_vars = data.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            raise SpecError(f"--env-spec: 'env_vars' in {path} must be a mapping")
        parse_env([f"{k}={v}" for k, v in env_vars.items()])
        return cls.from_options(
            base_dir=path.parent,
            pip=pip,
            requirements=data.get("requirements"),
            image=data.get("image"),
            working_dir=data.get("working_dir"),
            py_modules=data.get("py_modules"),
            env_vars={str(k): str(v) for k, v in env_vars.items()},
            excludes=data.get("excludes"),
            setup_timeout=(data.get("config") or {}).get("setup_timeout"),
        )

    def inherit(self, parent: EnvSpec) -> EnvSpec:
        """This spec as a child of ``parent``: env_vars merge (child wins), set fields override."""
        merged = replace(parent, env_vars={**parent.env_vars, **self.env_vars})
        overrides = {
            name: getattr(self, name)
            for name in ("pip", "requirements", "image", "working_dir", "py_modules", "excludes")
            if getattr(self, name)
        }
        return replace(merged, **overrides)

    @property
    def needs_packages(self) -> bool:
        return bool(self.pip or self.requirements)

    def is_empty(self) -> bool:
        return self == EnvSpec(setup_timeout=self.setup_timeout)

    def to_ray_runtime_env(self) -> dict[str, Any]:
        """Ray's ``runtime_env`` for this spec (Ray hashes and ships the files itself)."""
        runtime_env: dict[str, Any] = {}
        pip = list(self.pip)
        if self.requirements:
            pip += [
                line.strip()
                for line in self.requirements.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        if pip:
            runtime_env["pip"] = pip
        if self.working_dir:
            runtime_env["working_dir"] = str(self.working_dir)
        if self.py_modules:
            runtime_env["py_modules"] = [str(m) for m in self.py_modules]
        if self.env_vars:
            runtime_env["env_vars"] = dict(self.env_vars)
        if self.excludes:
            runtime_env["excludes"] = list(self.excludes)
        if self.setup_timeout != SETUP_TIMEOUT:
            runtime_env["config"] = {"setup_timeout_seconds": int(self.setup_timeout)}
        return runtime_env

    def describe(self) -> dict[str, Any]:
        return {
            "pip": list(self.pip),
            "requirements": str(self.requirements) if self.requirements else None,
            "image": self.image,
            "working_dir": str(self.working_dir) if self.working_dir else None,
            "py_modules": [str(m) for m in self.py_modules],
            "env_vars": sorted(self.env_vars),
            "excludes": list(self.excludes),
        }
