"""Settings, as traitlets configurables: ``%config``, Jupyter config files, ``JX_*`` variables.

One class per layer. ``ExecConfig`` holds the defaults every run starts from; a magic's
options override them for one run.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import platformdirs
from traitlets import Enum, Int, Unicode, default
from traitlets.config import Configurable

from .spec import Limits, parse_size

__all__ = ["ExecConfig"]


def _env(name: str, fallback: str) -> str:
    return os.environ.get(name, fallback)


_parsed_size = functools.lru_cache(maxsize=8)(parse_size)


@functools.lru_cache(maxsize=8)
def _parsed_limits(mem: str, cpus: str, timeout: str, cpu_time: str, pids: str, fsize: str, shm: str) -> Limits:
    return Limits.parse(memory=mem or None, cpus=cpus or None, timeout=timeout or None,
                        cpu_time=cpu_time or None, pids=pids or None, fsize=fsize or None, shm=shm or None)


class ExecConfig(Configurable):
    """Defaults for runs. Each can be set with ``%config ExecConfig.NAME = ...``."""

    backend = Unicode(help="Backend when a cell names none: auto, docker, seccomp or local. "
                           "auto picks docker if a daemon answers, else seccomp. Env: JX_BACKEND.").tag(config=True)
    mem = Unicode(help="Default memory limit, e.g. '2g'; '' for none. Env: JX_MEM.").tag(config=True)
    cpus = Unicode(help="Default CPU share, e.g. '1.5'; '' for none. Env: JX_CPUS.").tag(config=True)
    timeout = Unicode(help="Default wall-clock limit, e.g. '10m'; '' for none. Env: JX_TIMEOUT.").tag(config=True)
    cpu_time = Unicode(help="Default CPU-time limit, e.g. '5m'; '' for none. Env: JX_CPU_TIME.").tag(config=True)
    pids = Unicode(help="Default process/thread limit, e.g. '256'; '' for none. Env: JX_PIDS.").tag(config=True)
    fsize = Unicode(help="Default largest file a run may write, e.g. '1g'; '' for none. Env: JX_FSIZE.").tag(config=True)
    shm = Unicode(help="Default size of a run's own /dev/shm (a tmpfs; what is written there counts towards the "
                       "memory limit), e.g. '64m'; '' for none of its own (seccomp: the kernel's tmpfs default, "
                       "Docker: DockerConfig.shm_size). Env: JX_SHM.").tag(config=True)
    output_limit = Unicode(help="Output shown in the notebook per run before it is cut, e.g. '1m'. "
                                "The whole output is always kept in the run's log. Env: JX_OUTPUT_LIMIT."
                           ).tag(config=True)
    pool_size = Int(help="Pre-started sandbox processes kept ready per kind; 0 starts one per run. "
                         "Env: JX_POOL_SIZE.").tag(config=True)
    data_dir = Unicode(help="Where the run store and logs live. Env: JX_DATA_DIR.").tag(config=True)
    ray_address = Unicode(help="Ray cluster for %%rayrun and jupyter_exec.map when no --address is given: "
                               "auto, IP:PORT or ray://HOST:PORT; '' starts a local Ray once per kernel. "
                               "Env: JX_RAY_ADDRESS.").tag(config=True)
    scratch_dir = Unicode(help="Where each run's private scratch directory is made (removed after the run). "
                               "Env: JX_SCRATCH_DIR.").tag(config=True)

    widgets = Enum(("auto", "on", "off"), help="The live run panel in the cell: 'auto' shows it when a widget "
                                                 "frontend (JupyterLab, Notebook 7) is connected and streams plain "
                                                 "text otherwise (terminal, nbconvert); 'on' always; 'off' never "
                                                 "(--quiet also hides it). Env: JX_WIDGETS.").tag(config=True)
    ca_bundle = Unicode(help="CA bundle (PEM file) that env builds and pip trust, for hosts behind a "
                             "TLS-intercepting proxy; '' uses the defaults. Env: JX_CA_BUNDLE.").tag(config=True)
    envs_max_size = Unicode(help="Size cap of the runtime-env cache; `jupyter-exec envs gc` evicts the least "
                                 "recently used envs beyond it, e.g. '20g'. Env: JX_ENVS_MAX_SIZE.").tag(config=True)
    envs_max_age = Unicode(help="Envs unused this long are removed by gc, e.g. '30d'. Env: JX_ENVS_MAX_AGE."
                           ).tag(config=True)

    @default("widgets")
    def _widgets(self) -> str:
        return _env("JX_WIDGETS", "auto")

    @default("ca_bundle")
    def _ca_bundle(self) -> str:
        return _env("JX_CA_BUNDLE", "")

    @default("envs_max_size")
    def _envs_max_size(self) -> str:
        return _env("JX_ENVS_MAX_SIZE", "20g")

    @default("envs_max_age")
    def _envs_max_age(self) -> str:
        return _env("JX_ENVS_MAX_AGE", "30d")

    @default("backend")
    def _backend(self) -> str:
        return _env("JX_BACKEND", "auto")

    @default("mem")
    def _mem(self) -> str:
        return _env("JX_MEM", "2g")

    @default("cpus")
    def _cpus(self) -> str:
        return _env("JX_CPUS", "")

    @default("timeout")
    def _timeout(self) -> str:
        return _env("JX_TIMEOUT", "10m")

    @default("cpu_time")
    def _cpu_time(self) -> str:
        return _env("JX_CPU_TIME", "")

    @default("pids")
    def _pids(self) -> str:
        return _env("JX_PIDS", "256")

    @default("fsize")
    def _fsize(self) -> str:
        return _env("JX_FSIZE", "1g")

    @default("shm")
    def _shm(self) -> str:
        return _env("JX_SHM", "64m")

    @default("output_limit")
    def _output_limit(self) -> str:
        return _env("JX_OUTPUT_LIMIT", "1m")

    @default("pool_size")
    def _pool_size(self) -> int:
        return int(_env("JX_POOL_SIZE", "1"))

    @default("data_dir")
    def _data_dir(self) -> str:
        return _env("JX_DATA_DIR", platformdirs.user_data_dir("jupyter-exec"))

    @default("ray_address")
    def _ray_address(self) -> str:
        return _env("JX_RAY_ADDRESS", "")

    @default("scratch_dir")
    def _scratch_dir(self) -> str:
        return _env("JX_SCRATCH_DIR", os.path.join(tempfile.gettempdir(), f"jupyter-exec-{os.getuid()}"))

    def default_limits(self) -> Limits:
        """The default limits, parsed once per distinct setting (this is on every run's path)."""
        return _parsed_limits(self.mem, self.cpus, self.timeout, self.cpu_time, self.pids, self.fsize, self.shm)

    def output_limit_bytes(self) -> int:
        return _parsed_size(self.output_limit, "ExecConfig.output_limit")

    @property
    def store_path(self) -> Path:
        return Path(self.data_dir) / "runs.sqlite3"

    @property
    def logs_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    @property
    def envs_dir(self) -> Path:
        return Path(self.data_dir) / "envs"
