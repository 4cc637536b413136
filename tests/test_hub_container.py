"""The process sandbox inside a hub-like container, as ``scripts/hub-container-test`` starts it:
a JupyterHub user's server as DockerSpawner starts one (Docker's default seccomp profile and
capabilities, uid 1000, no ``--privileged``, no device). There the tests marked
``ordinary_user`` run too; this module checks that the container is such a one, that
``jupyter-exec doctor`` states exactly what holds there (what the setting allows, proven by those
tests and the cells below), and that a notebook runs through a notebook server in it.

Only in that container (``JX_TEST_HUB_CONTAINER=1``): on a host, ``test_ordinary_user`` checks
the imitation of it (``tests/no_namespaces.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import CELL_STATUS, HUB_CONTAINER
from test_notebooks import NOTEBOOKS, Executed, assert_shows_what_it_says

from jupyter_exec.runner import confine

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.ordinary_user,
    pytest.mark.skipif(not HUB_CONTAINER, reason="only inside the hub-like container (scripts/hub-container-test)"),
]
SECCOMP = "%%sandbox --backend seccomp"

# Docker's default capabilities (moby's oci/caps/defaults.go), as bits of CapBnd.
DOCKER_DEFAULT_CAPS = {
    "chown": 0,
    "dac_override": 1,
    "fowner": 3,
    "fsetid": 4,
    "kill": 5,
    "setgid": 6,
    "setuid": 7,
    "setpcap": 8,
    "net_bind_service": 10,
    "net_raw": 13,
    "sys_chroot": 18,
    "mknod": 27,
    "audit_write": 29,
    "setfcap": 31,
}
# What /dev holds in a container given no --device: Docker's own nodes and mounts.
DOCKER_DEV = {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin"}
DOCKER_DEV |= {"stdout", "tty", "urandom", "zero"}


def _status(pid: int | str = "self") -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _landlock_abi() -> int:
    """The Landlock ABI this container allows (``landlock_create_ruleset(NULL, 0, VERSION)``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))), 0)


def test_the_container_is_started_as_a_spawner_starts_one():
    """Else the rest proves nothing about a hub: not root, Docker's default capabilities and
    seccomp profile (not --privileged, not unconfined), no device, no engine socket, a home of
    its own, and no namespace of its own to make."""
    status = _status()
    assert os.getuid() == 1000 and os.getgid() == 1000
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == sum(1 << bit for bit in DOCKER_DEFAULT_CAPS.values())
    assert status["Seccomp"] == "2" and status["Seccomp_filters"] == "1"  # Docker's profile, and only it
    assert set(os.listdir("/dev")) <= DOCKER_DEV, sorted(set(os.listdir("/dev")) - DOCKER_DEV)
    assert not Path("/var/run/docker.sock").exists()
    home = Path.home()
    assert home == Path("/home/jovyan") and home.stat().st_uid == 1000 and os.access(home, os.W_OK)
    libc = ctypes.CDLL(None, use_errno=True)
    for flag in (0x10000000, 0x20000):  # CLONE_NEWUSER, CLONE_NEWNS
        assert libc.unshare(flag) == -1 and ctypes.get_errno() == errno.EPERM, hex(flag)
    assert not os.access("/sys/fs/cgroup", os.W_OK)


def _doctor_notes(report: str, backend: str) -> dict[str, str]:
    """``backend``'s notes in a doctor report, by what each is about ("--mem", "namespaces", ...)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ok", backend])
    notes = {}
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        about, _, said = line.strip().removeprefix("note: ").partition(": ")
        notes[about] = said
    return notes


def test_doctor_says_exactly_what_holds_here():
    """What this setting allows, as the cells of this suite find it: Landlock and the seccomp
    filter load under Docker's profile (test_sandbox_kernel's hostile cells, the cells below), no
    namespace and no cgroup of the run's own (below), so address space for --mem, the user's
    process count for --pids (the fork bomb in test_ordinary_user), --cpus and --shm refused (below,
    and test_ordinary_user's /dev/shm tests), a supervisor that kills what a run leaves (the
    double-forked daemon there), connect() refused (the host sockets there). No engine here: the
    container backend is unavailable and %%sandbox uses seccomp."""
    done = subprocess.run([sys.executable, "-m", "jupyter_exec.cli", "doctor"], capture_output=True, text=True)
    report = done.stdout
    assert done.returncode == 0, report + done.stderr
    notes = _doctor_notes(report, "seccomp")
    abi = _landlock_abi()
    assert abi >= 1 and f"landlock abi {abi}" in notes, report
    assert notes["namespaces"].startswith("none (unshare of a user namespace refused: [Errno 1]"), report
    assert notes["namespaces"].endswith("seccomp and Landlock still apply"), report
    assert notes["cgroup"].startswith("none ("), report
    assert notes["--mem"].startswith("RLIMIT_AS: address space per process"), report
    assert notes["--pids"].startswith("RLIMIT_NPROC over every process of your uid on this machine, in other"), report
    assert notes["--cpus"].startswith("refused, it needs a per-run cgroup"), report
    assert notes["--shm"].startswith("refused, it needs a mount namespace"), report
    assert notes["--network"].startswith("refused, a host list needs a network namespace of the run's own"), report
    assert notes["processes a run leaves"].startswith("killed by its supervisor, a child subreaper"), report
    assert "connect() is refused unless --network" in notes["sockets"], report
    assert "FAIL container no container engine" in report and "%%sandbox uses: seccomp" in report, report


def test_a_run_is_confined_in_the_kernels_namespaces_and_cgroup(kernel):
    """No namespace and no cgroup of the run's own (doctor: none of either): the run's are the
    kernel's; no_new_privs and its seccomp filter loaded on top of Docker's (two filters where the
    kernel has one); --mem as RLIMIT_AS, --pids as RLIMIT_NPROC above the uid's tasks on the whole
    machine (the neighbour's among them)."""
    kernel_view = {
        "ns": {name: os.readlink(f"/proc/{kernel.pid}/ns/{name}") for name in ("pid", "mnt", "net", "user")},
        "cgroup": Path(f"/proc/{kernel.pid}/cgroup").read_text(),
        "filters": _status(kernel.pid)["Seccomp_filters"],
    }
    cell = kernel.run(
        f"{SECCOMP} --mem 300m --pids 40\nimport os, resource\n"
        f"{CELL_STATUS}"
        "{'ns': {n: os.readlink(f'/proc/self/ns/{n}') for n in ('pid', 'mnt', 'net', 'user')},\n"
        " 'cgroup': open('/proc/self/cgroup').read(), 'filters': status['Seccomp_filters'].strip(),\n"
        " 'nnp': status['NoNewPrivs'].strip(), 'as': resource.getrlimit(resource.RLIMIT_AS)[0],\n"
        " 'nproc': resource.getrlimit(resource.RLIMIT_NPROC)[0]}",
        check=True,
    )
    run_view = eval(cell.result_text)  # a dict literal printed by the kernel
    assert run_view["ns"] == kernel_view["ns"] and run_view["cgroup"] == kernel_view["cgroup"]
    assert (kernel_view["filters"], run_view["filters"], run_view["nnp"]) == ("1", "2", "1")
    assert run_view["as"] == 300 * 2**20
    assert run_view["nproc"] >= 40 + int(os.environ["JX_TEST_HUB_NEIGHBOUR_TASKS"]), run_view["nproc"]


def test_pids_holds_while_another_containers_processes_of_the_same_uid_count(kernel):
    """Every hub user is uid 1000, and RLIMIT_NPROC counts a uid's processes and threads on the
    whole machine: the neighbour's (another user's server, started beside this container by the
    script) count, unseen here. A run under --pids 16 still starts about 16 (what else of the
    uid starts or ends meanwhile moves it by as many), where a count of what /proc shows here
    would let it start none."""
    unseen = confine.nproc_in_use() - confine.user_task_count()
    assert unseen >= int(os.environ["JX_TEST_HUB_NEIGHBOUR_TASKS"]), unseen
    cell = kernel.run(
        f"{SECCOMP} --pids 16 --timeout 30\nimport os, time\nforks = 0\nwhile forks < 64:\n    try:\n"
        "        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n"
        "        os._exit(0)\n    forks += 1\nforks",
        check=True,
    )
    assert 12 <= int(cell.result_text) <= 18, cell.result_text  # give or take what starts or ends meanwhile


def test_cpus_is_refused_in_one_line(kernel):
    cell = kernel.run(f"{SECCOMP} --cpus 0.5\nprint('ran')")
    assert cell.stderr.startswith("UsageError: seccomp backend unavailable: --cpus cannot be enforced here: it needs")
    assert cell.stderr.count("\n") == 1 and "ran" not in cell.stdout


def _ask(lab: dict, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{lab['url']}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else {}


async def _execute(lab: dict, kernel_id: str, notebook: nbformat.NotebookNode) -> None:
    """Run each code cell through the server's websocket, as JupyterLab does, and keep what it
    showed as the cell's outputs."""
    from jupyter_client.jsonutil import json_default
    from jupyter_client.session import Session
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = lab["url"].replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    socket = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {lab['token']}"}))
    session = Session(username="jovyan")
    try:
        for cell in (c for c in notebook.cells if c.cell_type == "code"):
            request = session.msg("execute_request", {"code": cell.source, "silent": False, "allow_stdin": False})
            await socket.write_message(json.dumps({**request, "channel": "shell"}, default=json_default))
            cell.outputs = []
            while True:
                text = await asyncio.wait_for(socket.read_message(), timeout=120)
                assert text is not None, "the server closed the kernel's websocket"
                message = json.loads(text)
                if message["channel"] != "iopub" or message["parent_header"].get("msg_id") != request["msg_id"]:
                    continue
                kind = message["msg_type"]
                if kind in ("stream", "display_data", "execute_result", "error"):
                    cell.outputs.append(nbformat.v4.output_from_msg(message))
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    break
    finally:
        socket.close()


def test_a_notebook_runs_through_the_notebook_server(lab):
    """A notebook server and its kernel as the container's user: the quickstart notebook's
    sandbox cells, sent through JupyterLab's REST API and kernel websocket, show what they say."""
    path = next(p for p in NOTEBOOKS if p.name == "quickstart.ipynb")
    shutil.copy(path, lab["root"] / path.name)
    session = _ask(lab, "POST", "/api/sessions", {"path": path.name, "type": "notebook", "kernel": {"name": "python3"}})
    try:
        notebook = nbformat.read(path, as_version=4)
        asyncio.run(_execute(lab, session["kernel"]["id"], notebook))
    finally:
        _ask(lab, "DELETE", f"/api/sessions/{session['id']}")
    assert_shows_what_it_says(path.name, notebook, lab["data_dir"])
    assert "%%sandbox uses: seccomp" in Executed(notebook, lab["data_dir"]).stdout("%jx doctor")
