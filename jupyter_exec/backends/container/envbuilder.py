"""Derived images for runtime envs: ``jupyter-exec/env:<hash>`` built FROM the cell's image, by its engine.

Packages are installed on the host with ``uv pip install --target`` for the image's Python
version and platform, then copied in with a two-line Dockerfile. So the image needs no
pip and no network during the build, a host behind a TLS-intercepting proxy only needs
its CA bundle set once (``ExecConfig.ca_bundle``), and rebuilding is as fast as uv.
Inside the container the env lives in ``/opt/jupyter-exec-env`` (``site`` on ``sys.path``,
``py_modules``, ``working_dir`` copied into the cell's working directory).
"""

from __future__ import annotations

import functools
import io
import platform
import tarfile
from pathlib import Path

from jupyter_exec.envs.builder import BuiltEnv, Progress
from jupyter_exec.envs.envspec import EnvSpec
from jupyter_exec.envs.venv import VenvBuilder
from jupyter_exec.errors import BackendUnavailableError, EnvBuildError

from . import keepers
from .engine import Engine
from .images import build_command

__all__ = ["ENV_ROOT", "ImageEnvBuilder"]

ENV_ROOT = "/opt/jupyter-exec-env"


@functools.cache
def _image_python(engine: Engine, image_id: str) -> str:
    """``major.minor`` of the image's python3 (asked once per image). Its container is made through
    the kernel's keeper, as a slot's is: a kernel killed while it runs leaves nothing behind."""
    api = engine.client.api
    created = keepers.create(
        engine,
        image_id,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        labels={"jupyter-exec.probe": "1"},
        host_config=api.create_host_config(network_mode="none"),
    )
    try:
        api.start(created["Id"])
        api.wait(created["Id"], timeout=60)
        return api.logs(created["Id"], stderr=False).decode().strip()
    finally:
        api.remove_container(created["Id"], force=True)


def _adds_nothing(spec: EnvSpec) -> bool:
    """True if the env puts no files in the image, so no derived image is needed."""
    return not (spec.needs_packages or spec.working_dir or spec.py_modules)


class ImageEnvBuilder:
    """Builds ``EnvSpec`` into a derived image of ``base_image``."""

    kind = "docker"  # the image format; the engine is any the container backend uses

    def __init__(self, base_image: str, ca_bundle: str | None = None, engine: Engine | None = None) -> None:
        self.base_image = base_image
        self.ca_bundle = ca_bundle
        self.target = f"{self.kind}:{base_image}"
        self._engine = engine

    @property
    def engine(self) -> Engine:
        """The given engine, else the one the container backend's settings choose."""
        if self._engine is None:
            from jupyter_exec.config import application_config

            from .config import DockerConfig
            from .discovery import choose

            settings = DockerConfig(config=application_config())
            self._engine = choose(settings.url, settings.docker_group)
        return self._engine

    @classmethod
    def for_target(cls, target: str) -> ImageEnvBuilder:
        """The builder that made envs of ``target`` (to delete one)."""
        return cls(target.partition(":")[2])

    def describe(self, spec: EnvSpec, hash_: str, path: Path) -> BuiltEnv:
        return BuiltEnv(
            hash=hash_,
            path=path,
            python=None,
            sys_path=(f"{ENV_ROOT}/site", f"{ENV_ROOT}/py_modules"),
            working_dir=Path(f"{ENV_ROOT}/working_dir") if spec.working_dir else None,
            image=self.base_image if _adds_nothing(spec) else f"jupyter-exec/env:{hash_}",
        )

    def build(self, spec: EnvSpec, path: Path, log: Path, progress: Progress) -> BuiltEnv:
        from docker.errors import ImageNotFound

        docker = self.engine.client
        name = self.base_image
        try:
            base = docker.images.get(name)
        except ImageNotFound:
            raise BackendUnavailableError(
                "container", f"image {name} is not on this machine", f"build or pull it first: {build_command(name)}"
            ) from None
        path.mkdir(parents=True)
        if _adds_nothing(spec):  # --image alone (env vars at most): the image as it is
            return self.describe(spec, path.name, path)
        staging = path / "context" / "env"
        (staging / "site").mkdir(parents=True)
        VenvBuilder.copy_files(spec, staging)
        log.write_text("")
        if spec.needs_packages:
            python = _image_python(self.engine, base.id)
            VenvBuilder(ca_bundle=self.ca_bundle).install_target(
                spec,
                staging / "site",
                python,
                f"{platform.machine()}-manylinux_2_28",
                log,
                progress,
            )
        built = self.describe(spec, path.name, path)
        dockerfile = f"FROM {base.id}\nCOPY env {ENV_ROOT}\n"
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(staging, arcname="env")
        context.seek(0)
        progress(f"building image {built.image}")
        try:
            docker.images.build(
                fileobj=context,
                custom_context=True,
                tag=built.image,
                rm=True,
                forcerm=True,  # a failed step's container goes too
                labels={"jupyter-exec.env": path.name},
            )
        except Exception as error:  # docker.errors.BuildError / APIError
            with open(log, "a") as log_file:
                log_file.write(f"docker build failed: {error}\n")
            raise EnvBuildError(f"building {built.image} failed: {error}", log, str(error)) from error
        return built

    def delete(self, path: Path) -> None:
        """Remove the derived image along with the env's directory."""
        import shutil

        try:
            self.engine.client.images.remove(f"jupyter-exec/env:{path.name}", force=True)
        except Exception:  # already gone, or the daemon is away: the dir still goes
            pass
        shutil.rmtree(path, ignore_errors=True)
