"""Virtual environments for the process backends (local, seccomp), built with ``uv``.

The venv is layered on the kernel's environment: a ``.pth`` file puts the kernel's
site-packages after the venv's own, so a cell sees what the kernel has plus what the env
adds, and the env's versions win. ``uv`` makes a small env in well under a second; where
it is missing, ``venv`` + ``pip`` do the same slower, with a notice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from jupyter_exec.errors import EnvBuildError

from .builder import BuiltEnv, Progress
from .envspec import EnvSpec
from .hashing import tree_files

__all__ = ["VenvBuilder"]

_PROGRESS_WORDS = (
    "Resolved",
    "Prepared",
    "Installed",
    "Downloading",
    "Downloaded",
    "Building",
    "Built",
    "Collecting",
    "Successfully",
    "Uninstalled",
    "Audited",
)


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def _requirements(spec: EnvSpec) -> list[str]:
    return list(spec.pip) + (["-r", str(spec.requirements)] if spec.requirements else [])


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


class VenvBuilder:
    """Builds ``EnvSpec`` packages into a venv for ``python`` (the sandbox's interpreter)."""

    kind = "venv"

    def __init__(self, python: str = sys.executable, ca_bundle: str | None = None) -> None:
        self.python = python
        self.ca_bundle = ca_bundle
        self.target = f"{self.kind}:{os.path.realpath(python)}"

    @classmethod
    def for_target(cls, target: str) -> VenvBuilder:
        """The builder that made envs of ``target`` (to delete one)."""
        return cls(target.partition(":")[2] or sys.executable)

    def delete(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def describe(self, spec: EnvSpec, hash_: str, path: Path) -> BuiltEnv:
        python = path / "venv" / "bin" / "python"
        return BuiltEnv(
            hash=hash_,
            path=path,
            python=str(python) if python.exists() else None,
            sys_path=(str(path / "py_modules"),) if spec.py_modules else (),
            working_dir=path / "working_dir" if spec.working_dir else None,
        )

    def build(self, spec: EnvSpec, path: Path, log: Path, progress: Progress) -> BuiltEnv:
        path.mkdir(parents=True)
        log.write_text("")
        if spec.needs_packages:
            self._make_venv(spec, path / "venv", log, progress, time.monotonic() + spec.setup_timeout)
        self.copy_files(spec, path)
        return self.describe(spec, path.name, path)

    def _make_venv(self, spec: EnvSpec, venv: Path, log: Path, progress: Progress, deadline: float) -> None:
        uv = _uv()
        if uv:
            self._run([uv, "venv", "--quiet", "--python", self.python, str(venv)], log, progress, deadline)
            install = [uv, "pip", "install", "--python", str(venv / "bin" / "python")]
        else:
            progress("uv not found: building with venv + pip (slower); `pip install uv` speeds this up")
            self._run([self.python, "-m", "venv", "--without-pip", str(venv)], log, progress, deadline)
            install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
        base = sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})
        layers = sorted({base["purelib"], base["platlib"]})
        (_site_packages(venv) / "_jupyter_exec_base.pth").write_text("\n".join(layers) + "\n")
        requirements = _requirements(spec)
        progress(f"installing {' '.join(requirements)}")
        self._run(install + requirements, log, progress, deadline)

    def install_target(
        self, spec: EnvSpec, target: Path, python_version: str, python_platform: str, log: Path, progress: Progress
    ) -> None:
        """Install the spec's packages into ``target`` for another interpreter (an image's)."""
        uv = _uv()
        if uv is None:
            raise EnvBuildError("building an env for an image needs uv; `pip install uv`", log, "")
        requirements = _requirements(spec)
        progress(f"installing {' '.join(requirements)} for Python {python_version}")
        self._run(
            [
                uv,
                "pip",
                "install",
                "--target",
                str(target),
                "--python-version",
                python_version,
                "--python-platform",
                python_platform,
                *requirements,
            ],
            log,
            progress,
            time.monotonic() + spec.setup_timeout,
        )

    def _run(self, command: list[str], log: Path, progress: Progress, deadline: float) -> None:
        """Run a build step, log everything, show progress lines, enforce the setup timeout."""
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
        env["NO_COLOR"] = "1"  # plain text for the log and the progress lines (kernels force colour)
        if self.ca_bundle:
            env.update(SSL_CERT_FILE=self.ca_bundle, PIP_CERT=self.ca_bundle, UV_NATIVE_TLS="1")
        with open(log, "a") as log_file:
            log_file.write(f"$ {' '.join(command)}\n")
            log_file.flush()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
            assert process.stdout is not None
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), process.kill)
            watchdog.start()
            try:
                for line in process.stdout:
                    log_file.write(line)
                    if line.strip().startswith(_PROGRESS_WORDS):
                        progress(line.strip())
                process.wait()
            finally:
                watchdog.cancel()
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        if time.monotonic() >= deadline and process.returncode != 0:
            raise EnvBuildError(
                f"env setup timed out at `{Path(command[0]).name} {command[1]}`; raise setup_timeout in the env spec",
                log,
                tail,
            )
        if process.returncode != 0:
            raise EnvBuildError(
                f"`{Path(command[0]).name} {' '.join(command[1:3])} ...` failed (exit {process.returncode})", log, tail
            )

    @staticmethod
    def copy_files(spec: EnvSpec, path: Path) -> None:
        """Package working_dir and py_modules into the env, honouring excludes and .gitignore."""
        sources = [(spec.working_dir, path / "working_dir")] if spec.working_dir else []
        sources += [(m, path / "py_modules" / m.name) for m in spec.py_modules]
        for source, destination in sources:
            for file in tree_files(source, spec.excludes):
                target = destination / file.relative_to(source) if source.is_dir() else destination
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
