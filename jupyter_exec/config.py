"""Settings, as traitlets configurables: ``%config``, Jupyter config files, ``JX_*`` variables.

One class per layer. ``ExecConfig`` holds the defaults every run starts from; a magic's
options override them for one run.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import platformdirs
from traitlets import Enum, Int, TraitType, Undefined, Unicode
from traitlets.config import Application, Config, Configurable

from .limits import LIMITS
from .spec import Limits
from .store.filesystems import store_location
from .units import parse_duration, parse_size

__all__ = ["ExecConfig", "application_config", "env_trait", "limit_setting", "scratch_prefix"]

T = TypeVar("T", bound=TraitType[Any, Any])


def env_trait(
    trait: T, variable: str, fallback: Any | Callable[[], Any], check: Callable[[Any, str], object] | None = None
) -> T:
    """``trait`` as a setting: configurable, and defaulting to ``$variable`` (read when an
    instance is made, as the trait's type reads a command-line value), else ``fallback``
    (a value, or a function for one worked out then). Its help names the variable.
    ``check(value, variable)`` refuses a bad value of the variable, naming it."""

    def from_environment() -> Any:
        if variable in os.environ:
            value = trait.from_string(os.environ[variable])
            if check is not None:
                check(value, variable)
            return value
        return fallback() if callable(fallback) else fallback

    trait.default_value = Undefined
    trait.make_dynamic_default = from_environment  # type: ignore[attr-defined]
    trait.default_value_repr = lambda: f"${variable}, else {'(computed)' if callable(fallback) else repr(fallback)}"  # type: ignore[method-assign]
    trait.help = f"{trait.help} Env: {variable}."
    return trait.tag(config=True)


def scratch_prefix(pid: int | str) -> str:
    """How the names of the kernel ``pid``'s scratch directories begin (in ``scratch_dir``): what
    outlives a killed kernel finds them by (``"*"``: any kernel's, as a glob)."""
    return f"{pid}-run-"


def application_config() -> Config | None:
    """The running Jupyter application's config (its files and command line), if any."""
    return Application.instance().config if Application.initialized() else None


def limit_setting(field: str) -> Unicode[str, str | bytes]:
    """The ExecConfig setting of the default of limit ``field``: its name, help, ``JX_*`` variable
    and default from the limits table; a bad value of the variable is refused naming it."""
    limit = LIMITS[field]
    assert limit.variable is not None and limit.default is not None, f"{field}: the kernel has no default for it"
    return env_trait(
        Unicode(help=limit.config_help()),
        limit.variable,
        limit.default,
        lambda value, variable: value and limit.read(value, variable),
    )


#: The limits the kernel has defaults for: (field, its ExecConfig setting).
_DEFAULTED = tuple((limit.field, limit.setting) for limit in LIMITS.values() if limit.setting is not None)
_parsed_size = functools.lru_cache(maxsize=8)(parse_size)


@functools.lru_cache(maxsize=8)
def _parsed_limits(settings: tuple[str, ...]) -> Limits:
    """The default limits from their settings' text ('' for none), each named as ``ExecConfig.NAME``."""
    values = {field: text or None for (field, _), text in zip(_DEFAULTED, settings, strict=True)}
    return Limits.read(values, lambda limit: f"ExecConfig.{limit.setting}")


class ExecConfig(Configurable):
    """Defaults for runs. Each can be set with ``%config ExecConfig.NAME = ...``, a Jupyter
    config file, or its ``JX_*`` environment variable."""

    backend = env_trait(
        Unicode(
            help="Backend when a cell names none: auto, container (also called docker), seccomp or local. "
            "auto picks container if a container engine answers, else seccomp."
        ),
        "JX_BACKEND",
        "auto",
    )
    # The default limits: one setting per row of the limits table that has one (a test checks).
    mem = limit_setting("memory")
    cpus = limit_setting("cpus")
    timeout = limit_setting("timeout")
    cpu_time = limit_setting("cpu_time")
    pids = limit_setting("pids")
    fsize = limit_setting("fsize")
    shm = limit_setting("shm")
    output_limit = env_trait(
        Unicode(
            help="Output shown in the notebook per run before it is cut, e.g. '1m'. "
            "The whole output is always kept in the run's log."
        ),
        "JX_OUTPUT_LIMIT",
        "1m",
    )
    pool_size = env_trait(
        Int(help="Pre-started sandbox processes kept ready per kind; 0 starts one per run."), "JX_POOL_SIZE", 1
    )
    data_dir = env_trait(
        Unicode(
            help="Where the run store and logs live. On a network filesystem that keeps file locks "
            "on one host (sshfs, NFS mounted nolock, ...) the store itself is kept on this machine's "
            "disk instead; `jupyter-exec doctor` says where."
        ),
        "JX_DATA_DIR",
        lambda: platformdirs.user_data_dir("jupyter-exec"),
    )
    ray_address = env_trait(
        Unicode(
            help="Ray cluster for %%rayrun and jupyter_exec.map when no --address is "
            "given: auto, IP:PORT or ray://HOST:PORT; '' starts a local Ray once "
            "per kernel."
        ),
        "JX_RAY_ADDRESS",
        "",
    )
    ray_connect_timeout = env_trait(
        Unicode(
            help="How long finding the Ray cluster at an address may take before the cell fails "
            "with what was found there (nothing listening, not a Ray cluster, a token or version "
            "mismatch), e.g. '10s'; ray.init then gets as long again."
        ),
        "JX_RAY_CONNECT_TIMEOUT",
        "10s",
    )
    scratch_dir = env_trait(
        Unicode(help="Where each run's private scratch directory is made (removed after the run)."),
        "JX_SCRATCH_DIR",
        lambda: os.path.join(tempfile.gettempdir(), f"jupyter-exec-{os.getuid()}"),
    )
    widgets = env_trait(
        Enum(
            ("auto", "on", "off"),
            help="The live run panel in the cell: 'auto' shows it when a "
            "widget frontend (JupyterLab, Notebook 7) is connected and "
            "streams plain text otherwise (terminal, nbconvert); 'on' "
            "always; 'off' never (--quiet also hides it).",
        ),
        "JX_WIDGETS",
        "auto",
    )
    ca_bundle = env_trait(
        Unicode(
            help="CA bundle (PEM file) that env builds and pip trust, for hosts behind a "
            "TLS-intercepting proxy; '' uses the defaults."
        ),
        "JX_CA_BUNDLE",
        "",
    )
    envs_max_size = env_trait(
        Unicode(
            help="Size cap of the runtime-env cache; `jupyter-exec envs gc` evicts the "
            "least recently used envs beyond it, e.g. '20g'."
        ),
        "JX_ENVS_MAX_SIZE",
        "20g",
    )
    envs_max_age = env_trait(
        Unicode(help="Envs unused this long are removed by gc, e.g. '30d'."), "JX_ENVS_MAX_AGE", "30d"
    )

    broker = env_trait(
        Unicode(
            help="A jupyter-exec broker that runs this kernel's container cells, for shared hubs: "
            "unix:///run/jupyter-exec/broker.sock (a system service) or an http(s):// URL (a JupyterHub "
            "service, e.g. http://127.0.0.1:8000/services/jupyter-exec/). Set, every container run goes "
            "to the broker and nowhere else; the kernel needs no container engine. '' for none."
        ),
        "JX_BROKER",
        "",
    )
    broker_token = env_trait(
        Unicode(
            help="The token an http(s) broker checks against the hub; default: the single-user "
            "server's $JUPYTERHUB_API_TOKEN."
        ),
        "JX_BROKER_TOKEN",
        lambda: os.environ.get("JUPYTERHUB_API_TOKEN", ""),
    )

    min_free_space = env_trait(
        Unicode(
            help="Free space the data directory must keep for a run to start, e.g. '32m': below it "
            "a cell is refused before it runs, so its record is never lost to a full disk. '0' turns "
            "the check off."
        ),
        "JX_MIN_FREE_SPACE",
        "32m",
    )

    cache_max_size = env_trait(
        Unicode(
            help="Size cap of the cache of identical runs (--cache): past it the least recently used "
            "entries go, e.g. '1g'. `%jx cache clear` empties it."
        ),
        "JX_CACHE_MAX_SIZE",
        "1g",
    )

    session_idle = env_trait(
        Unicode(
            help="How long a sandbox session (%%sandbox --session NAME) may sit idle before it is ended "
            "and what it held is freed, e.g. '30m' or '2h'; '0' keeps sessions until %jx end or the kernel goes."
        ),
        "JX_SESSION_IDLE",
        "30m",
        lambda value, variable: parse_duration(value or "0", variable),
    )

    state_budget = env_trait(
        Unicode(
            help="The node states explore(..., from_state=True) holds at once: a count, and optionally their "
            "memory in all, e.g. '8,4g'; past it the least promising are released (and rebuilt if wanted again)."
        ),
        "JX_STATE_BUDGET",
        "8,4g",
    )

    def default_limits(self) -> Limits:
        """The default limits, parsed once per distinct setting (this is on every run's path)."""
        return _parsed_limits(tuple(getattr(self, setting) for _, setting in _DEFAULTED))

    def output_limit_bytes(self) -> int:
        return _parsed_size(self.output_limit, "ExecConfig.output_limit")

    def cache_max_bytes(self) -> int:
        return _parsed_size(self.cache_max_size, "ExecConfig.cache_max_size")

    def session_idle_seconds(self) -> float | None:
        """``session_idle`` in seconds; None: sessions are never ended for idling."""
        seconds = parse_duration(self.session_idle.strip() or "0", "ExecConfig.session_idle")
        return seconds or None

    def min_free_bytes(self) -> int:
        text = self.min_free_space.strip()
        return 0 if text in ("", "0") else _parsed_size(text, "ExecConfig.min_free_space")

    @property
    def store_path(self) -> Path:
        """``data_dir/runs.sqlite3``, or this machine's place for it (``store.filesystems.store_location``)."""
        return store_location(Path(self.data_dir))[0]

    @property
    def logs_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    @property
    def envs_dir(self) -> Path:
        return Path(self.data_dir) / "envs"
