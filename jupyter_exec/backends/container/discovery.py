"""Which container engine a kernel uses: the one configured, else the best one found.

``DockerConfig.url`` (``JX_CONTAINER_URL``) names one; ``auto`` (the default) takes
``DOCKER_HOST`` if set, else looks at the usual sockets in this order:

- for root: the rootful Docker socket, then rootful Podman's;
- for anyone else: rootless Docker (``$XDG_RUNTIME_DIR/docker.sock``), then the user's own
  Podman socket, started on demand (``podman system service``) when Podman is installed
  and nothing answers there (shared by the user's kernels, the one thing allowed to outlive
  them, and only until it has been idle ``DockerConfig.podman_idle`` seconds; an engine that
  finds it gone starts it again), then a root daemon's socket, but never one this user
  reaches only through the ``docker`` group (that group is root-equivalent: anyone in it
  can start a privileged container) unless ``DockerConfig.docker_group`` allows it.

``survey`` lists every engine found, for ``doctor``.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import pwd
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from jupyter_exec.errors import BackendUnavailableError

from .engine import Engine, RetryPolicy

__all__ = ["DOCKER_SOCKET", "Candidate", "candidates", "choose", "podman_socket", "survey", "through_group_only"]

DOCKER_SOCKET = Path("/var/run/docker.sock")
ROOT_PODMAN_SOCKET = Path("/run/podman/podman.sock")
_STARTED_ON_DEMAND = "installed; its service is started on first use when no engine before it answers"
_PODMAN_START_WAIT = 30.0  # seconds for a Podman service we started to answer
PODMAN_IDLE = 300.0  # seconds a Podman service we started stays after its last request (DockerConfig.podman_idle)


@dataclass(frozen=True)
class Candidate:
    """A socket an engine may answer on, and whether ``auto`` may use it."""

    url: str
    label: str  # what it is, for messages
    usable: bool = True
    why_not: str = ""
    podman: bool = False  # the user's own Podman socket: its service may be started on demand


def podman_socket() -> Path:
    """Where this user's Podman API service listens (Podman's own default for the user)."""
    if os.geteuid() == 0:
        return ROOT_PODMAN_SOCKET
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        return Path(runtime_dir) / "podman" / "podman.sock"
    return Path(f"/tmp/podman-run-{os.getuid()}") / "podman" / "podman.sock"


def through_group_only(path: Path) -> str:
    """Why this user may not use a root daemon's socket it can open, or '' if it may."""
    try:
        info = path.stat()
    except OSError:
        return ""
    if info.st_uid == os.geteuid() or os.geteuid() == 0:
        return ""
    if info.st_mode & stat.S_IWOTH:
        return ""
    group = _group_name(info.st_gid)
    if info.st_gid in os.getgroups() and info.st_mode & stat.S_IWGRP:
        return (
            f"reached only through the group {group!r}, which is root-equivalent "
            "(set DockerConfig.docker_group = True to use it anyway)"
        )
    user = pwd.getpwuid(os.geteuid()).pw_name
    return f"only the {group} group may use it and {user} is not in it (that group is root-equivalent)"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def candidates(docker_group: bool = False) -> list[Candidate]:
    """The sockets ``auto`` considers, in order of preference."""
    if os.geteuid() == 0:
        return [
            Candidate(f"unix://{DOCKER_SOCKET}", "Docker (rootful)"),
            Candidate(f"unix://{ROOT_PODMAN_SOCKET}", "Podman (rootful)", podman=True),
        ]
    found = []
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        found.append(Candidate(f"unix://{runtime_dir}/docker.sock", "Docker (rootless)"))
    found.append(Candidate(f"unix://{podman_socket()}", "Podman (rootless)", podman=True))
    for path, label in ((DOCKER_SOCKET, "Docker (rootful)"), (ROOT_PODMAN_SOCKET, "Podman (rootful)")):
        why = "" if docker_group else through_group_only(path)
        found.append(Candidate(f"unix://{path}", label, usable=not why, why_not=why))
    return found


def _answers(url: str) -> bool:
    path = url.removeprefix("unix://")
    if url.startswith("unix://") and not os.path.exists(path):
        return False
    try:
        import docker

        client = docker.DockerClient(base_url=url, version="1.41", timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to answer a ping means "not here"
        return False


def start_podman(socket: Path, idle: float = PODMAN_IDLE) -> bool:
    """Start this user's Podman API service on ``socket`` (once, whoever asks first) and wait
    for it to answer. It runs on in its own process session, outliving the kernel that started
    it, until it has had no request for ``idle`` seconds (0: never); its log is in the user's
    cache directory. False if Podman is not installed."""
    podman = shutil.which("podman")
    if podman is None:
        return False
    if os.geteuid() != 0 and not _may_make_user_namespaces():
        # Started from here anyway, it answers a ping and then fails every container.
        raise BackendUnavailableError(
            "container",
            "rootless Podman needs a user namespace, and this process may not make one (unshare is "
            "refused here, as under Docker's default seccomp profile)",
            "pass --backend seccomp, or start Podman's service where user namespaces are allowed",
        )
    socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = f"unix://{socket}"
    with open(socket.parent / "jupyter-exec-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(url):
            return True
        log = Path(platformdirs.user_cache_dir("jupyter-exec")) / "podman-service.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as output:
            service = subprocess.Popen(
                [podman, "system", "service", f"--time={math.ceil(idle)}", url],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # not in the kernel's process group: an interrupt never reaches it
                cwd="/",
            )
        # Reaped here when it ends (idle, while this process lives), never left a zombie.
        threading.Thread(target=service.wait, name="podman-service-reaper", daemon=True).start()
        deadline = time.monotonic() + _PODMAN_START_WAIT
        while time.monotonic() < deadline and service.poll() is None:
            if _answers(url):
                return True
            time.sleep(0.1)
    said = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    how = f"it exited ({said[0] if said else 'no output'})" if service.poll() is not None else "it did not answer"
    raise BackendUnavailableError(
        "container", f"started `podman system service {url}`, but {how}", f"see {log}, or pass --backend seccomp"
    )


def _may_make_user_namespaces() -> bool:
    """Whether a process started from here may make a user namespace (as rootless Podman must)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return True  # cannot tell: let Podman try and say
    try:
        return subprocess.run([unshare, "--user", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def configured_url(url: str) -> str | None:
    """The address chosen by configuration (``DockerConfig.url``, else ``DOCKER_HOST``), or None for auto."""
    if url and url != "auto":
        return url
    return os.environ.get("DOCKER_HOST") or None


def choose(
    url: str = "auto",
    docker_group: bool = False,
    retry_policy: RetryPolicy | None = None,
    podman_idle: float = PODMAN_IDLE,
) -> Engine:
    """The engine to use: the configured one, else the first candidate that answers (the
    user's Podman service started if need be, and again whenever it is found gone after
    ``podman_idle`` idle seconds); ``BackendUnavailableError`` saying what was tried."""
    policy = retry_policy or RetryPolicy()
    chosen = configured_url(url)
    if chosen is not None:
        return Engine(chosen, policy)
    tried = []
    found = candidates(docker_group)
    for candidate in found:
        if not candidate.usable:
            if os.path.exists(candidate.url.removeprefix("unix://")):
                tried.append(f"{candidate.label} at {candidate.url}: {candidate.why_not}")
            continue
        if _answers(candidate.url):
            return _engine(candidate, policy, podman_idle)
        tried.append(f"{candidate.label} at {candidate.url}: no answer")
    for candidate in found:
        if candidate.podman and candidate.usable and start_podman(_path(candidate), podman_idle):
            return _engine(candidate, policy, podman_idle)
    fixes = [] if shutil.which("podman") else ["install Podman (apt-get install podman uidmap: no root needed)"]
    if not DOCKER_SOCKET.exists():
        fixes.append("start dockerd")
    fixes += ["set DockerConfig.url to an engine you may use", "pass --backend seccomp"]
    raise BackendUnavailableError(
        "container", "no container engine this user may use answers (" + "; ".join(tried) + ")", ", or ".join(fixes)
    )


def _path(candidate: Candidate) -> Path:
    return Path(candidate.url.removeprefix("unix://"))


def _engine(candidate: Candidate, policy: RetryPolicy, podman_idle: float) -> Engine:
    """The engine at ``candidate``; the user's own Podman is started again when found gone."""
    if not (candidate.podman and shutil.which("podman")):
        return Engine(candidate.url, policy)
    return Engine(candidate.url, policy, revive=functools.partial(start_podman, _path(candidate), podman_idle))


@dataclass(frozen=True)
class Found:
    """One engine found, as ``doctor`` shows it."""

    url: str
    label: str
    answers: bool
    usable: bool
    note: str  # its facts, or why it is not used


def survey(docker_group: bool = False) -> list[Found]:
    """Every socket an engine answers on (or could: the user's Podman), and what it is; a root
    daemon's socket this user may not use is listed with the reason."""
    found = []
    for candidate in candidates(docker_group):
        if not _answers(candidate.url):
            if candidate.podman and candidate.usable and shutil.which("podman"):
                found.append(Found(candidate.url, candidate.label, False, True, _STARTED_ON_DEMAND))
            elif not candidate.usable and os.path.exists(candidate.url.removeprefix("unix://")):
                found.append(Found(candidate.url, candidate.label, False, False, f"not used: {candidate.why_not}"))
            continue
        try:
            note = Engine(candidate.url).facts.describe()
        except Exception as error:  # it answered a ping: say what failed after that
            note = f"answers, but its facts could not be read ({error})"
        if not candidate.usable:
            note = f"{note}; not used: {candidate.why_not}"
        found.append(Found(candidate.url, candidate.label, True, candidate.usable, note))
    return found
