"""The process sandbox's fork server: each run a fresh child of a template that never runs
anything, so nothing one run leaves is there for the next. Run as root, and as jx-user with
and without namespaces (``ordinary_user``)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
SECCOMP = "%%sandbox --backend seccomp"


def _processes_with(tag: str) -> list[int]:
    """Processes (anywhere on this host) whose command line holds ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _templates_of(kernel) -> list[int]:
    """The kernel's fork servers (its runs are their children, forked with the same command line)."""
    return [pid for pid in _processes_with("forkserver.py") if _parent(pid) == kernel.pid]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError):
        return None


def _number() -> str:
    """A unique run of digits (``sleep`` takes 300.DIGITS; its command line then names the test)."""
    return str(uuid.uuid4().int)[:10]


# In a cell: the command lines of the processes it can see, from /proc (a hub's image may have no ps).
_COMMAND_LINES = (
    "def command_lines():\n"
    "    lines = []\n"
    "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "        try:\n"
    "            lines.append(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
    "        except OSError:\n"
    "            pass\n"
    "    return '\\n'.join(lines)\n"
)


def test_nothing_a_run_leaves_is_there_for_the_next(kernel):
    tag, number = uuid.uuid4().hex, _number()
    first = kernel.run(
        f"{SECCOMP} --out places\n"
        "import json, os, subprocess, sys, tempfile, time\n"
        "places = []\n"
        f"for folder in ('.', os.environ['HOME'], tempfile.gettempdir(), '/tmp', '/dev/shm'):\n"
        "    try:\n"
        f"        path = os.path.abspath(os.path.join(folder, 'left-{tag}'))\n"
        "        open(path, 'w').write('x')\n"
        "        places.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        f"os.environ['JX_LEFT'] = '{tag}'\n"
        f"os.putenv('JX_LEFT_PUT', '{tag}')\n"
        f"json.LEFT = sys.LEFT = os.LEFT = '{tag}'\n"
        f"left = '{tag}'\n"
        f"subprocess.Popen(['sleep', '300.{number}1'], start_new_session=True)\n"
        f"if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '300.{number}2'])\n"
        "time.sleep(0.3)\n"
        f"{_COMMAND_LINES}running = command_lines()\n"
        f"assert running.count('300.{number}') == 2, running\n"
        "places",
        check=True,
    )
    assert kernel.eval("places"), first  # some of them were writable: the cell's own scratch at least
    deadline = time.monotonic() + 5
    while _processes_with(f"300.{number}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_with(f"300.{number}"), "a process the previous run started is still running"
    second = kernel.run(
        f"{SECCOMP}\n"
        "import json, os, subprocess, sys\n"
        f"files = [p for p in {kernel.eval('places')!r} if os.path.exists(p)]\n"
        "env = [k for k in ('JX_LEFT', 'JX_LEFT_PUT') if k in os.environ]\n"
        "modules = [m.__name__ for m in (json, sys, os) if hasattr(m, 'LEFT')]\n"
        "variables = [n for n in ('left', 'places') if n in globals()]\n"
        f"{_COMMAND_LINES}processes = [line for line in command_lines().splitlines() if '300.{number}' in line]\n"
        "print(files, env, modules, variables, processes)",
        check=True,
    )
    assert second.stdout == "[] [] [] [] []\n", second.stdout


def test_every_run_is_a_fresh_process_of_one_template(kernel):
    """Runs fork from the same template (one per kernel, Python and namespace setting; other
    tests of the session may have made others), each a process of its own."""
    # A process: its pid in its pid namespace, and that namespace (where each run has its own,
    # every run is pid 2 in it; where none can be made, pids differ). Start times do not tell:
    # they count 10 ms ticks, and a forked run takes less.
    code = f"{SECCOMP}\nimport os\nprint(os.getpid(), os.readlink('/proc/self/ns/pid'))"
    kernel.run(code, check=True)
    templates = _templates_of(kernel)
    processes = {kernel.run(code, check=True).stdout for _ in range(3)}
    assert len(processes) == 3, processes
    assert templates and _templates_of(kernel) == templates  # no template was started for them


def test_a_cell_cannot_stop_the_fork_server(kernel):
    """A hostile cell SIGKILLs every other process it can find that could be the template
    (its supervisor among them); none dies, and the next run starts as usual."""
    before = _templates_of(kernel)
    attack = kernel.run(
        f"{SECCOMP}\nimport os, signal\nhit = []\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
        "    try:\n"
        "        if b'forkserver' in open(f'/proc/{pid}/cmdline', 'rb').read():\n"
        "            os.kill(pid, signal.SIGKILL)\n"
        "            hit.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('hit', hit)"
    )
    assert attack.error is None or attack.error["ename"] == "PermissionError", attack.error
    assert "hit []" in attack.stdout or attack.error is not None, attack.stdout
    assert before and _templates_of(kernel) == before
    assert kernel.run(f"{SECCOMP}\n1 + 1", check=True).result_text == "2"


def _started(worker, code: str) -> None:
    """Give ``worker`` a request to run ``code`` (unconfined), once it is ready."""
    from jupyter_exec.runner.protocol import build_request

    worker.wait_ready()
    worker.child.write_request(build_request(code, inputs=None, outputs=(), trust=False, env={}, cwd="/"))


def test_what_escapes_a_killed_worker_is_killed_by_its_template():
    """Without namespaces a run's processes hang from its supervisor; kill that first (as a
    timeout's kill can race with a fork) and what it held is re-parented to the template,
    which kills it at once."""
    import signal
    import sys

    from jupyter_exec.backends.process.templates import Template
    from jupyter_exec.backends.process.workers import Worker, WorkerKey

    tag = _number()
    template = Template(sys.executable, "none")
    try:
        worker = Worker(WorkerKey(sys.executable, namespaces=False, network=True), template)
        _started(worker, f"import subprocess, time\nsubprocess.Popen(['sleep', '300.{tag}'])\ntime.sleep(300)")
        deadline = time.monotonic() + 10
        while not _processes_with(f"300.{tag}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _processes_with(f"300.{tag}")
        os.kill(worker.pid, signal.SIGKILL)  # the supervisor only
        deadline = time.monotonic() + 2
        while _processes_with(f"300.{tag}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _processes_with(f"300.{tag}"), "an orphan of the killed run lives on"
        worker.close()
    finally:
        template.close()


def test_a_worker_with_a_template_of_its_own_takes_it_along():
    """Where each run's cgroup is a systemd scope, a worker gets a template of its own (started
    in that scope) and closing the worker ends it."""
    import sys

    from jupyter_exec.backends.process.templates import Template
    from jupyter_exec.backends.process.workers import Worker, WorkerKey

    template = Template(sys.executable, "none")
    worker = Worker(WorkerKey(sys.executable, namespaces=False, network=True), template, own_template=True)
    _started(worker, "print('ran')")
    assert worker.child.wait(timeout=10).status == 0
    worker.close()
    assert template.process.poll() is not None
