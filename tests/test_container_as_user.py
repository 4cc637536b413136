"""Containers for an ordinary user, checked from root: the docker-group rule as ``jx-user``
sees it (through ``scripts/as-user``), and an image copied from root's Docker into the
user's rootless Podman. (The container wall itself runs as ``jx-user`` through
``scripts/test-as-user``: test_container_lockdown.py is marked ``ordinary_user``.)
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import require

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
USER = os.environ.get("JX_USER", "jx-user")


def _account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        return None


def test_a_socket_reached_only_through_a_group_is_not_used_unless_allowed():
    """``auto`` never picks a root daemon's socket the user reaches only through a group (the
    docker group is root-equivalent); ``DockerConfig.docker_group`` lets it."""
    account = _account()
    require(os.geteuid() == 0 and account is not None, f"needs root and the account {USER}")
    assert account is not None
    work = Path(tempfile.mkdtemp(prefix="jx-group-"))
    path = work / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        os.chown(path, 0, account.pw_gid)  # root's socket, the user's group
        path.chmod(0o660)
        work.chmod(0o755)
        probe = (
            "from pathlib import Path; from jupyter_exec.backends.container import discovery; "
            f"print(discovery.through_group_only(Path({str(path)!r})))"
        )
        done = subprocess.run(
            [str(ROOT / "scripts" / "as-user"), "python", "-c", probe], capture_output=True, text=True, timeout=60
        )
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    group = grp.getgrgid(account.pw_gid).gr_name
    assert done.stdout.strip() == (
        f"reached only through the group {group!r}, which is root-equivalent "
        "(set DockerConfig.docker_group = True to use it anyway)"
    )


def test_an_image_is_copied_into_the_users_podman(tmp_path):
    """``jupyter-exec images copy``: ``docker save`` streamed into the user's ``podman load`` (how an
    image built by root's Docker reaches a rootless engine), and a second copy is a no-op."""
    account = _account()
    require(os.geteuid() == 0 and account is not None, f"needs root and the account {USER}")
    assert account is not None
    from jupyter_exec.backends.container import images
    from jupyter_exec.backends.container.engine import Engine

    listed = subprocess.run(
        [
            str(ROOT / "scripts" / "as-user"),
            "python",
            "-c",
            "from jupyter_exec.backends.container import discovery\nprint(discovery.choose().url)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and "podman" in listed.stdout, listed
    docker, podman = Engine("unix:///var/run/docker.sock"), Engine(listed.stdout.strip())
    tag = "jupyter-exec/copy-test:latest"
    archive = tmp_path / "tiny.tar"
    (tmp_path / "hello.txt").write_text("hello\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(archive), "hello.txt"], check=True)
    repository, _, version = tag.partition(":")
    docker.client.api.import_image_from_file(
        str(archive), repository=repository, tag=version, changes=[f'LABEL {images.HASH_LABEL}="test-1"']
    )
    said: list[str] = []
    try:
        images.copy(tag, docker, podman, progress=said.append)
        assert said[-1] == f"copied {tag}"
        assert [row.tag for row in images.list_images(podman) if row.tag == tag] == [tag]
        images.copy(tag, docker, podman, progress=said.append)
        assert said[-1] == f"{tag} is up to date on {podman.url}"
    finally:
        docker.client.images.remove(tag, force=True)
        podman.client.images.remove(tag, force=True)


def test_where_no_user_namespace_can_be_made_auto_never_starts_podman():
    """As ``jx-user`` under the no-namespace filter, with no Podman service on its socket yet:
    Podman's service is not started (it would answer a ping, then fail every container, as seen
    under Docker's default profile); the container backend says why and ``auto`` picks seccomp."""
    account = _account()
    require(os.geteuid() == 0 and account is not None, f"needs root and the account {USER}")
    assert account is not None
    work = Path(tempfile.mkdtemp(prefix="jx-no-userns-"))  # where the user can reach it
    work.chmod(0o755)
    runtime_dir = work / "runtime"  # the user's sockets: none there yet
    runtime_dir.mkdir(mode=0o700)
    os.chown(runtime_dir, account.pw_uid, account.pw_gid)
    probe = (
        "from jupyter_exec.runner.confine import apply_seccomp\n"
        "apply_seccomp(network=True)  # as tests/no_namespaces.py: unshare refused from here on\n"
        "from jupyter_exec.backends import factory\n"
        "from jupyter_exec.backends.container import ContainerBackend\n"
        "found = ContainerBackend.availability()\n"
        "print(found.ok, found.reason, sep='\\n')\n"
        "print(factory.resolve_name('auto'))"
    )
    try:
        done = subprocess.run(
            [str(ROOT / "scripts" / "as-user"), "env", f"XDG_RUNTIME_DIR={runtime_dir}", "python", "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
        )
        started = (runtime_dir / "podman" / "podman.sock").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "False",
        "rootless Podman needs a user namespace, and this process may not make one (unshare is refused "
        "here, as under Docker's default seccomp profile)",
        "seccomp",
    ], done.stdout
    assert not started  # no service was started


_IDLE_PROBE = """
import functools, json, os, sys, time
from pathlib import Path
from jupyter_exec.backends.container import discovery
from jupyter_exec.backends.container.engine import Engine

socket, idle = Path(sys.argv[1]), float(sys.argv[2])

def services():
    found = []
    for entry in Path('/proc').iterdir():
        try:
            words = (entry / 'cmdline').read_bytes().split(b'\\0')
        except OSError:
            continue
        if b'service' in words and f'unix://{socket}'.encode() in words:
            found.append(int(entry.name))
    return found

def outlives(pids):
    # how long the service lives on after its last request (bounded, so a service that stays fails)
    start = time.monotonic()
    while time.monotonic() - start < 30 * idle and any(os.path.exists(f'/proc/{pid}') for pid in pids):
        time.sleep(0.1)
    return time.monotonic() - start, [pid for pid in pids if os.path.exists(f'/proc/{pid}')]

engine = Engine(f'unix://{socket}', revive=functools.partial(discovery.start_podman, socket, idle))
report = {'started': discovery.start_podman(socket, idle)}
first = services()
report['answered'] = engine.retry(engine.client.ping, 'ping')
report['first'], left = outlives(first)
report['socket gone'] = not socket.exists()
report['kind'] = engine.retry(engine.client.version, 'version')['Components'][0]['Name']  # started again
second = services()
report['again'] = bool(second) and not set(second) & set(first)
report['second'], left_again = outlives(second)
report['left'] = left + left_again
print(json.dumps(report))
"""


def test_the_users_podman_service_exits_when_idle_and_is_started_again_on_demand():
    """The user's Podman API service is the one thing allowed to outlive a kernel, and only for
    ``DockerConfig.podman_idle`` seconds after its last request (here 2); an engine that finds it
    gone starts it again."""
    account = _account()
    require(os.geteuid() == 0 and account is not None, f"needs root and the account {USER}")
    require(shutil.which("podman") is not None, "Podman is not installed")
    assert account is not None
    work = Path(tempfile.mkdtemp(prefix="jx-podman-idle-"))  # a socket of its own: the user's own service untouched
    work.chmod(0o755)
    folder = work / "podman"
    folder.mkdir(mode=0o700)
    os.chown(folder, account.pw_uid, account.pw_gid)
    try:
        done = subprocess.run(
            [str(ROOT / "scripts" / "as-user"), "python", "-c", _IDLE_PROBE, str(folder / "podman.sock"), "2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["started"] and report["answered"] and report["kind"] == "Podman Engine", report
    assert report["left"] == [], report  # each service ended on its own, within 30 idle times
    assert report["first"] > 1 and report["socket gone"], report  # not before it had idled (about 2 s)
    assert report["again"] and report["second"] > 1, report
