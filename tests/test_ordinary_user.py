"""The seccomp sandbox as most people run Jupyter, through a real kernel: what a cell can do
(multiprocessing, joblib, its own /dev/shm), what it cannot (outlive its run, take the
user's processes, reach the host's sockets), and that it runs as the user.

The root suite runs these as root. ``scripts/test-as-user`` runs them again as an
ordinary account, once with user namespaces and once with none (``JX_TEST_NO_NAMESPACES``:
the kernel under a filter that refuses ``unshare``); ``scripts/hub-container-test`` runs them
where there are none for real, in a hub-like container. Where ``%jx doctor`` says a guarantee
is not available in a mode, the test checks that the cell meets exactly what doctor says.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import HUB_CONTAINER, NO_NAMESPACES, require

from jupyter_exec.backends.container.discovery import DOCKER_SOCKET

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
SECCOMP = "%%sandbox --backend seccomp"


def test_doctor_tells_which_mode_this_is(kernel):
    """Each limit is reported, and the namespaces line matches what the user is and has."""
    doctor = kernel.doctor()
    for option in ("--mem: ", "--pids: ", "--cpus: ", "--shm: ", "namespaces: ", "cgroup: "):
        assert kernel.offers(option), (option, doctor)
    assert kernel.offers("namespaces: none (") == NO_NAMESPACES, doctor
    if not NO_NAMESPACES:
        assert kernel.offers("inside a user namespace of your own") == (os.geteuid() != 0), doctor
    assert kernel.offers("--cpus: refused") == kernel.offers("cgroup: none"), doctor


def test_multiprocessing_and_joblib(kernel):
    pool = kernel.run(
        f"{SECCOMP}\nimport multiprocessing\ndef square(x):\n    return x * x\n"
        "with multiprocessing.Pool(2) as pool:\n    squares = pool.map(square, range(6))\nsquares"
    )
    jobs = kernel.run(
        f"{SECCOMP}\nimport os\nfrom joblib import Parallel, delayed\n"
        "pids = set(Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(8)))\n"
        "squares = Parallel(n_jobs=2)(delayed(pow)(x, 2) for x in range(6))\n"
        "squares, bool(pids - {os.getpid()})",
        check=True,
    )
    if kernel.offers("--shm: refused"):  # doctor: no /dev/shm of its own, so no multiprocessing
        assert pool.error["ename"] == "PermissionError", pool.error
        assert jobs.result_text == "([0, 1, 4, 9, 16, 25], False)"  # joblib: right, in one process
        assert "joblib will operate in serial mode" in jobs.stderr
        return
    assert pool.error is None and pool.result_text == "[0, 1, 4, 9, 16, 25]", pool.error
    assert jobs.result_text == "([0, 1, 4, 9, 16, 25], True)"  # joblib used worker processes


def test_shm_limit_stops_a_bigger_write(kernel):
    fill = "f = open('/dev/shm/fill', 'wb')\nfor _ in range(64):\n    f.write(b'x' * 2**20)\nf.flush()"
    if kernel.offers("--shm: refused"):
        cell = kernel.run(f"{SECCOMP} --shm 16m\nprint('ran')")
        assert cell.stderr.startswith("UsageError: seccomp backend unavailable: --shm cannot be enforced here")
        assert cell.stderr.count("\n") == 1 and "ran" not in cell.stdout
        return
    cell = kernel.run(f"{SECCOMP} --shm 16m\n{fill}")
    assert cell.error["ename"] == "OSError" and "[Errno 28] No space left on device" in cell.error["evalue"]


_DAEMON = """
import os, signal, sys, time
def daemon():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    beacon = os.path.join({folder!r}, 'beacon')
    n = 0
    while True:
        n += 1
        with open(beacon + '.new', 'w') as f:
            f.write(str(n))
        os.replace(beacon + '.new', beacon)
        time.sleep(0.02)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        daemon()
    os._exit(0)
while not os.path.exists(os.path.join({folder!r}, 'beacon')):
    time.sleep(0.01)
"""


@pytest.mark.parametrize("ending", ["returns", "times out"])
def test_a_double_forked_setsid_child_is_gone_within_a_second(kernel, tmp_path, ending):
    folder = tmp_path / "out"
    folder.mkdir()
    code = _DAEMON.format(folder=str(folder)) + ("time.sleep(60)\n" if ending == "times out" else "")
    cell = kernel.run(f"{SECCOMP} --timeout 3 --mount {folder}:rw\n{code}")
    ended = time.monotonic()
    assert (cell.error is None) == (ending == "returns"), cell.error
    beacon = folder / "beacon"
    time.sleep(max(0.0, ended + 1.0 - time.monotonic()))
    seen = beacon.read_text()
    time.sleep(0.5)
    assert beacon.read_text() == seen, "the daemon still writes its beacon a second after the run ended"
    assert int(seen) > 0


def test_fork_bomb_is_contained_and_the_users_other_processes_are_not(kernel):
    bomb = (
        "import os, time\nforks = 0\nwhile True:\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(4)\n        os._exit(0)\n"
        "    forks += 1\nprint('forks', forks, flush=True)\ntime.sleep(4)"
    )
    started = {}

    def spawn_while_the_bomb_holds() -> None:
        deadline = time.monotonic() + 60
        while kernel.last_run()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the bomb is at its limit now, its processes asleep
        started["ok"] = sum(subprocess.run(["true"]).returncode == 0 for _ in range(20))

    helper = threading.Thread(target=spawn_while_the_bomb_holds)
    helper.start()
    cell = kernel.run(f"{SECCOMP} --pids 32 --timeout 30\n{bomb}", timeout=90)
    helper.join()
    assert cell.error is None, cell.error
    forks = int(cell.stdout.split()[1])
    # the run's own processes, not all of the user's; with no namespaces the limit is an rlimit of
    # the user's processes counted at the start plus 32, so one of the user's that ends meanwhile
    # frees a place for the bomb
    assert 16 <= forks <= 36, cell.stdout
    assert started["ok"] == 20  # the user started processes while the bomb was at its limit


def test_host_loopback_and_sockets_are_unreachable(kernel):
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0jx-test-{uuid.uuid4().hex}")
    named = socket.socket(socket.AF_UNIX)
    named_path = f"/tmp/jx-test-{uuid.uuid4().hex}.sock"
    named.bind(named_path)
    os.chmod(named_path, 0o777)
    servers = (tcp, abstract, named)
    try:
        for server in servers:
            server.listen()
            server.setblocking(False)
        targets = {
            "tcp": ("socket.AF_INET", tcp.getsockname()),
            "abstract": ("socket.AF_UNIX", abstract.getsockname()),
            "named": ("socket.AF_UNIX", named_path),
        }
        for name, (family, address) in targets.items():
            cell = kernel.run(
                f"{SECCOMP}\nimport socket\ns = socket.socket({family})\ns.settimeout(2)\ns.connect({address!r})"
            )
            assert cell.error is not None and cell.error["ename"] in (
                "PermissionError",
                "ConnectionRefusedError",
                "FileNotFoundError",
            ), (name, cell.error)
        for server in servers:
            with pytest.raises(BlockingIOError):
                server.accept()  # nothing ever reached it
    finally:
        for server in servers:
            server.close()
        os.unlink(named_path)


def test_a_cell_cannot_empty_a_file_of_yours_it_cannot_open(kernel):
    """Landlock governs truncate() from ABI 3 (Linux 6.2) on; before that, as on Debian 12's
    kernel, the seccomp filter refuses it, and doctor says so. The file keeps its content."""
    victim = Path.home() / f"jx-test-{uuid.uuid4().hex}.txt"
    victim.write_text("precious")
    try:
        cell = kernel.run(f"{SECCOMP}\nimport os\nos.truncate({str(victim)!r}, 0)")
        assert cell.error is not None and cell.error["ename"] == "PermissionError", cell.error
        assert victim.read_text() == "precious"
    finally:
        victim.unlink()
    abi = int(re.search(r"landlock abi (\d+)", kernel.doctor()).group(1))
    assert kernel.offers("truncate(): Landlock before ABI 3 does not govern it") == (abi < 3), kernel.doctor()


def test_the_cell_runs_as_the_user_and_writes_files_the_user_owns(kernel, tmp_path):
    folder = tmp_path / "owned"
    folder.mkdir()
    cell = kernel.run(
        f"{SECCOMP} --mount {folder}:rw\nimport subprocess\n"
        f"open({str(folder / 'made')!r}, 'w').write('x')\n"
        "int(subprocess.run(['id', '-u'], capture_output=True, text=True, check=True).stdout)",
        check=True,
    )
    assert cell.result_text == str(os.getuid())
    assert (folder / "made").stat().st_uid == os.getuid()


def test_doctor_says_when_dockers_socket_refuses_this_user(kernel):
    """Not "start the daemon" when it runs: the group is the problem, and it is root-equivalent
    (the container backend then uses a rootless engine where there is one)."""
    path = str(DOCKER_SOCKET)
    if HUB_CONTAINER:
        pytest.skip("a hub's container has no engine socket: test_hub_container checks what doctor says there")
    require(os.path.exists(path), f"no Docker socket at {path}")
    doctor = kernel.doctor()
    if os.access(path, os.R_OK | os.W_OK):
        assert "is not in it" not in doctor, doctor
    else:
        lines = doctor.splitlines()
        listed = next(i for i, line in enumerate(lines) if line.strip().endswith(f"unix://{path}"))
        assert "is not in it (that group is root-equivalent)" in lines[listed + 1], doctor
        assert "start it" not in doctor and "start dockerd" not in doctor, doctor
