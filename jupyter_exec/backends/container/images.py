"""Sandbox images: build them from ``dockerfiles/`` (online or fully offline), copy them between
engines, list them. Each works on the engine the container backend uses, or the one given.

``build("base", offline=True)`` needs no registry: it makes a Debian root filesystem with
debootstrap from the mirror this machine's own apt already uses (as root; the tarball is
cached), imports it, and builds the base Dockerfile on top. Each image is labelled with a
hash of its Dockerfile folder, so building again is a no-op until that folder changes.
An engine that cannot build it offline (a user's rootless Podman: debootstrap needs root)
gets it from one that has it: ``copy`` streams ``docker save`` into ``podman load``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from jupyter_exec.errors import JupyterExecError

from .engine import Engine, retry

__all__ = ["IMAGES", "build", "build_command", "copy", "default_engine", "image_tag", "list_images"]

DOCKERFILES = Path(__file__).parents[2] / "dockerfiles"  # jupyter_exec/dockerfiles
IMAGES = ("base", "datascience", "gpu", "ray")
HASH_LABEL = "jupyter-exec.source-hash"
OFFLINE_PACKAGES = ("python3", "python3-numpy", "python3-pandas", "ca-certificates")
Progress = Callable[[str], None]


def default_engine() -> Engine:
    """The engine the container backend's settings choose."""
    from jupyter_exec.config import application_config

    from .config import DockerConfig
    from .discovery import choose

    settings = DockerConfig(config=application_config())
    return choose(settings.url, settings.docker_group)


def image_tag(name: str) -> str:
    return f"jupyter-exec/{name}:latest"


def build_command(image: str) -> str:
    """The command that makes ``image``, for error messages."""
    match = re.fullmatch(r"jupyter-exec/([a-z]+)(:latest)?", image)
    if match and match.group(1) in IMAGES:
        return f"jupyter-exec images build {match.group(1)}" + (" --offline" if match.group(1) == "base" else "")
    return f"docker pull {image}  (or docker build -t {image} ...)"


def source_hash(name: str, offline: bool) -> str:
    digest = hashlib.sha256(f"offline={offline};{','.join(OFFLINE_PACKAGES) if offline else ''}".encode())
    folder = DOCKERFILES / name
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def apt_mirror() -> tuple[str, str]:
    """(mirror URL, suite) of this machine's main Debian source, read from /etc/apt."""
    codename = ""
    if Path("/etc/os-release").exists():
        found = re.search(r"^VERSION_CODENAME=(\S+)", Path("/etc/os-release").read_text(), re.M)
        codename = found.group(1).strip('"') if found else ""
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                candidates += [(uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()]
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in (p for p in lists if p.exists()):
        for line in path.read_text().splitlines():
            found = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if found:
                candidates.append((found.group(1), [found.group(2)]))
    for uri, suites in candidates:
        if codename and codename in suites:
            return uri, codename
    raise JupyterExecError(
        "no Debian mirror for this release in /etc/apt sources; build online instead: jupyter-exec images build base"
    )


def _rootfs_image(progress: Progress, cache_dir: Path, docker: Any) -> str:
    """A Debian root filesystem as an image, made with debootstrap (tarball cached)."""
    mirror, suite = apt_mirror()
    tag = f"jupyter-exec/rootfs:{suite}-{hashlib.sha256(','.join(OFFLINE_PACKAGES).encode()).hexdigest()[:8]}"
    if docker.images.list(name=tag):
        return tag
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"{tag.split(':')[1]}.tar"
    if not tarball.exists():
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            raise JupyterExecError(
                "--offline needs debootstrap, run as root (apt-get install debootstrap); a user's engine can "
                "instead copy the image from an engine that has it: jupyter-exec images copy base --from URL"
            )
        rootfs = cache_dir / "rootfs.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        progress(f"debootstrap {suite} with {', '.join(OFFLINE_PACKAGES)} (about a minute or two)")
        _stream(
            ["debootstrap", "--variant=minbase", f"--include={','.join(OFFLINE_PACKAGES)}", suite, str(rootfs), mirror],
            progress,
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        progress(f"packing the root filesystem into {tarball.name}")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball) + ".part", "."], check=True)
        os.replace(str(tarball) + ".part", tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    progress(f"docker import {tarball.name} as {tag}")
    repository, _, version = tag.partition(":")
    retry(
        lambda: docker.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=version,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8"],
        ),
        what="docker import",
    )
    return tag


def _stream(command: list[str], progress: Progress) -> None:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(("I: Retrieving", "I: Validating")):
            continue  # one line per package: too much for a progress display
        progress("  " + line.rstrip())
    if process.wait() != 0:
        raise JupyterExecError(f"{command[0]} failed (exit {process.returncode}); see the lines above")


def _context(name: str, ca_bundle: Path | None) -> io.BytesIO:
    """The build context: the Dockerfile folder plus the CA bundle (empty when none)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(DOCKERFILES / name, arcname=".")
        data = ca_bundle.read_bytes() if ca_bundle else b""
        info = tarfile.TarInfo("extra-ca.crt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def build(
    name: str,
    *,
    offline: bool = False,
    ca_bundle: Path | None = None,
    force: bool = False,
    rootfs_cache: Path | None = None,
    progress: Progress = print,
    engine: Engine | None = None,
) -> str:
    """Build ``jupyter-exec/NAME:latest`` on ``engine`` (default: the backend's); returns its tag.
    A no-op when already up to date."""
    if name not in IMAGES:
        raise JupyterExecError(f"no image {name!r}; choose one of: {', '.join(IMAGES)}")
    if offline and name != "base":
        raise JupyterExecError(
            "--offline makes the base image only; build base with --offline, then "
            f"`jupyter-exec images build {name}` (its packages come from the network)"
        )
    tag, digest = image_tag(name), source_hash(name, offline)
    docker = (engine or default_engine()).client
    existing = docker.images.list(name=tag)
    if existing and not force and (existing[0].labels or {}).get(HASH_LABEL) == digest:
        progress(f"{tag} is up to date ({HASH_LABEL}={digest})")
        return tag
    buildargs = {}
    if offline:
        buildargs["BASE_IMAGE"] = _rootfs_image(
            progress, rootfs_cache or Path(platformdirs.user_cache_dir("jupyter-exec")) / "rootfs", docker
        )
    progress(f"building {tag} from dockerfiles/{name}" + (f" on {buildargs['BASE_IMAGE']}" if buildargs else ""))
    stream = docker.api.build(
        fileobj=_context(name, ca_bundle),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        buildargs=buildargs,
        labels={HASH_LABEL: digest},
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            raise JupyterExecError(f"building {tag} failed: {chunk['error'].strip()}")
        text = chunk.get("stream", "").rstrip()
        if text:
            progress("  " + text)
    progress(f"built {tag}")
    return tag


@dataclass(frozen=True)
class ImageRow:
    """One image as ``jupyter-exec images list`` shows it; a project image the engine lacks has
    no ``image_id`` and its ``state`` says how to build it."""

    tag: str
    image_id: str  # the engine's own short id (as ``docker images`` shows it); "" when missing
    size: int  # bytes
    created: str
    state: str  # up to date, outdated or missing (with the command that builds it); a runtime env's image


def list_images(engine: Engine | None = None) -> list[ImageRow]:
    """Every image the project builds (those the engine lacks too), then the other
    ``jupyter-exec/`` images it has (runtime envs' derived images)."""
    found: dict[str, ImageRow] = {}
    for image in (engine or default_engine()).client.images.list():
        for tag in image.tags:
            tag = tag.removeprefix("localhost/")  # Podman's name for a local image
            if tag.startswith("jupyter-exec/"):
                label = (image.labels or {}).get(HASH_LABEL)
                found[tag] = ImageRow(
                    tag,
                    image.id.removeprefix("sha256:")[:12],
                    int(image.attrs.get("Size", 0)),
                    image.attrs.get("Created", "")[:19].replace("T", " "),
                    _state(tag, label),
                )
    missing = [
        ImageRow(image_tag(name), "", 0, "", f"missing: {build_command(image_tag(name))}")
        for name in IMAGES
        if image_tag(name) not in found
    ]
    return sorted([*found.values(), *missing], key=lambda row: (row.tag not in _PROJECT_TAGS, row.tag))


_PROJECT_TAGS = {image_tag(name) for name in IMAGES}


def _state(tag: str, label: str | None) -> str:
    """Whether a project image matches its Dockerfile folder now (built online or offline)."""
    name = tag.removeprefix("jupyter-exec/").removesuffix(":latest")
    if tag not in _PROJECT_TAGS:
        return "a runtime env's image" if tag.startswith("jupyter-exec/env:") else ""
    if label in (source_hash(name, False), source_hash(name, True)):
        return "up to date"
    return f"outdated: {build_command(tag)}"


def copy(name: str, source: Engine, target: Engine, *, progress: Progress = print) -> str:
    """Copy ``jupyter-exec/NAME:latest`` (or another tag) from ``source`` to ``target`` (``docker
    save`` streamed into ``podman load``); a no-op when ``target`` has it with the same source hash."""
    import docker.errors

    tag = image_tag(name) if name in IMAGES else name
    try:
        image = source.client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise JupyterExecError(f"{source.url} has no image {tag}; build it there first: {build_command(tag)}") from None
    digest = (image.labels or {}).get(HASH_LABEL)
    present = target.client.images.list(name=tag)
    if digest and present and (present[0].labels or {}).get(HASH_LABEL) == digest:
        progress(f"{tag} is up to date on {target.url}")
        return tag
    progress(f"copying {tag} from {source.url} to {target.url}")
    with tempfile.TemporaryFile() as archive:
        for chunk in image.save(named=True):
            archive.write(chunk)

        def load() -> Any:
            archive.seek(0)
            return target.client.images.load(archive)

        retry(load, what="load the image")
    progress(f"copied {tag}")
    return tag
