"""The broker on a Unix socket, as a shared machine runs it: root's broker owns the container
engine; two ordinary accounts (jx-user, jx-user2: scripts/setup.d/60 and 70), neither able to
open the engine's socket, run container cells through it from their own kernels.

One broker and one kernel per user for the session (``broker``, ``alice``, ``bob``). Each user's
kernel runs as that account under ``setpriv`` with this tree first on its path, so what runs is
this checkout. Raw requests (``raw``) are sent as a user from a small client of the wire format,
to show the broker holds a hand-made request to the same policy as the magic's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from conftest import Kernel, free_port, make_wheel, require
from containers import derived_image
from jupyter_client.manager import KernelManager
from test_store_migrations import old_broker_file
from values import SEEN, round_trip

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[1]
USERS = (os.environ.get("JX_USER", "jx-user"), os.environ.get("JX_USER2", "jx-user2"))
USER_VENV = Path(os.environ.get("JX_USER_VENV", "/opt/jupyter-exec/user-venv"))
USER_LABEL = "jupyter-exec.user"
POLICY = """\
memory: 1g
quotas: {runs: 2, when_full: queue}
users:
  BOB: {runtime: runsc, quotas: {runs: 3}}
"""
LOOSE = "memory: 64g\n"
SANDBOX = "%%sandbox --backend container"
HOSTNAME = "import socket, time\nprint(socket.gethostname(), flush=True)\n"


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        require(False, f"the account {user} (scripts/setup.d/70-broker.sh)")
        raise


def _as_user(user: str, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """``command`` as ``user``, with a clean environment and this tree first on its path."""
    account = _account(user)
    settings = {
        "HOME": account.pw_dir,
        "USER": user,
        "LANG": "C.UTF-8",
        "PATH": f"{USER_VENV}/bin:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    return [
        "setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups",
        "env", "-i", *(f"{k}={v}" for k, v in settings.items()), *command,
    ]  # fmt: skip


def _user_dir(user: str) -> Path:
    """A directory of ``user``'s own, in a parent every account can enter."""
    made = Path(tempfile.mkdtemp(prefix=f"jx-broker-{user}-"))
    account = _account(user)
    os.chown(made, account.pw_uid, account.pw_gid)
    return made


class Broker:
    """Root's ``jupyter-exec broker`` on a socket every account reaches; ``prepare`` fills its data
    directory first."""

    def __init__(self, prepare: Callable[[Path], object] = lambda data: None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="jx-broker-"))
        self.home.chmod(0o755)
        self.socket = self.home / "broker.sock"
        self.data = self.home / "data"
        prepare(self.data)
        self.audit = self.home / "audit.jsonl"
        self.policy = self.home / "broker.yaml"
        self.policy.write_text(POLICY.replace("BOB", USERS[1]))
        self.address = f"unix://{self.socket}"
        self.log = open(self.home / "broker.log", "ab")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        command = [sys.executable, "-m", "jupyter_exec.cli", "broker", "--socket", str(self.socket)]
        command += ["--policy", str(self.policy), "--data-dir", str(self.data), "--audit", str(self.audit)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            assert self.process.poll() is None, (self.home / "broker.log").read_text()
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)

    def admin(self, request: dict) -> dict:
        from jupyter_exec.backends.broker.transport import Address, ask

        return ask(Address.parse(self.address), request)

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


class UserKernel(Kernel):
    """A kernel running as ``user`` (``setpriv``), its data in a directory of its own."""

    def __init__(self, user: str, env: dict[str, str]) -> None:
        account = _account(user)
        self.user = user
        self.data_dir = self.cwd = _user_dir(user)
        self.km = KernelManager(kernel_name="python3")
        self.km.connection_file = str(self.data_dir / "kernel.json")
        launch = shlex.join(
            _as_user(user, "python", "-m", "ipykernel_launcher", env={"JX_DATA_DIR": str(self.data_dir), **env})
        )
        # root writes the connection file: hand it to the user, then become the kernel (exec: one pid)
        script = f'chown {account.pw_uid}:{account.pw_gid} "$1" && exec {launch} -f "$1"'
        self.km.kernel_spec.argv = ["sh", "-c", script, "sh", "{connection_file}"]
        self.km.start_kernel(cwd=str(self.data_dir))
        self.client = self.km.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.loaded = self.run("%load_ext jupyter_exec", check=True)

    def shutdown(self) -> None:
        super().shutdown()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def start(self, code: str) -> str:
        """Execute ``code`` without waiting; its message id."""
        return self.client.execute(code)

    def finish(self, msg_id: str, timeout: float = 60) -> dict:
        """The execute reply of a cell ``start`` began."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"]["msg_id"] == msg_id:
                return reply["content"]


_RAW = textwrap.dedent("""
    import json, sys, threading
    from jupyter_exec.backends.broker.transport import Address, open_stream
    address, requests = Address.parse(sys.argv[1]), json.load(sys.stdin)
    streams = [open_stream(address, request) for request in requests]
    events = [[] for _ in streams]
    def read(i):
        while (event := streams[i].next()) is not None:
            event["at"] = __import__("time").monotonic()
            events[i].append(event)
            if event["t"] in ("end", "error", "reply"):
                break
    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps(events))
""")


def raw(user: str, broker: Broker, *requests: dict, background: bool = False):
    """Send ``requests`` at once as ``user`` (the version added); each one's events, in order."""
    command = _as_user(user, "python", "-c", _RAW, broker.address)
    sent = json.dumps([{"v": 1, **r} for r in requests])
    if background:
        with tempfile.TemporaryFile("w+") as given:
            given.write(sent)
            given.seek(0)
            return subprocess.Popen(command, stdin=given, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, input=sent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _containers(**labels: str) -> list:
    filters = [f"{k}={v}" for k, v in labels.items()]
    return docker.from_env().api.containers(all=True, filters={"label": filters})  # no inspect: none can vanish


def _can_run_brokers() -> None:
    require(os.geteuid() == 0, "root (the broker owns the engine; the users are other accounts)")
    require(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    require((USER_VENV / "bin" / "python").exists(), f"the users' venv {USER_VENV} (scripts/setup.d/60)")
    for user in USERS:
        _account(user)


@pytest.fixture(scope="session")
def broker():
    _can_run_brokers()
    made = Broker()
    yield made
    made.stop()


@pytest.fixture(scope="session")
def alice(broker):
    """jx-user, who also points JX_POLICY at a looser file of her own."""
    loose = _user_dir(USERS[0]) / "loose.yaml"
    loose.write_text(LOOSE)
    kernel = UserKernel(USERS[0], {"JX_BROKER": broker.address, "JX_POLICY": str(loose)})
    yield kernel
    kernel.shutdown()
    shutil.rmtree(loose.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def bob(broker):
    kernel = UserKernel(USERS[1], {"JX_BROKER": broker.address})
    yield kernel
    kernel.shutdown()


def test_every_kind_of_value_crosses_the_broker_into_an_older_numpy_and_pandas(alice):
    """The user's kernel (numpy 2 / pandas >= 2.2) and the broker's base image (numpy 1 / pandas 1.5)."""
    versions, seen = round_trip(alice, SANDBOX)
    assert versions.startswith("1.") and " 1.5" in versions and seen == SEEN


def test_users_run_container_cells_through_the_broker_without_the_engine(alice, bob):
    """Values, --out, live output and exceptions come back; the user cannot open the engine's socket."""
    for kernel in (alice, bob):
        reach = kernel.run("import os\nos.access('/var/run/docker.sock', os.W_OK), os.getuid() != 0", check=True)
        assert reach.result_text == "(False, True)"
        cell = kernel.run(
            f"{SANDBOX} --out y\nprint('from the sandbox')\ny = 6 * 7\nimport os\nos.getuid()", check=True
        )
        assert cell.stdout == "from the sandbox\n" and cell.result_text == "65534"
        assert kernel.run("y", check=True).result_text == "42"
    live = alice.run(f"{SANDBOX}\nimport time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')")
    assert live.stdout == "first\nsecond\n"
    assert live.stream_times[-1] - live.stream_times[0] > 1.0, "the first line came only at the end"
    failed = bob.run(f"{SANDBOX}\ndef f():\n    return 1 / 0\nf()")
    assert failed.error["ename"] == "ZeroDivisionError"
    assert "return 1 / 0" in "\n".join(failed.error["traceback"])
    gaierror = "import socket\nraise socket.gaierror(-2, 'Name or service not known')"
    caught = bob.run(
        f"try:\n    get_ipython().run_cell_magic('sandbox', {SANDBOX.removeprefix('%%sandbox ')!r}, {gaierror!r})\n"
        "except OSError as e:\n    print(e.errno, e)"
    )
    assert caught.stdout == "-2 gaierror: [Errno -2] Name or service not known\n", caught  # its nearest builtin base


def test_display_and_a_background_run_through_the_broker(bob):
    shown = bob.run(
        f"{SANDBOX}\nclass Table:\n    def _repr_html_(self): return '<b>bold</b>'\ndisplay(Table())\n'after'",
        check=True,
    )
    assert shown.displays[0]["text/html"] == "<b>bold</b>" and shown.result_text == "'after'"
    cell = bob.run(f"{SANDBOX} --bg --out w\nimport time\ntime.sleep(2)\nw = 7\nw * 6", check=True)
    returned = time.time()
    line = cell.displays[-1]["text/plain"]  # run N in the background: %jx wait N for its result
    assert cell.result is None and "%jx wait" in line
    run_id = line.split("%jx wait ")[1].split()[0]
    assert bob.run(f"%jx wait {run_id}", check=True).result_text == "42" and bob.eval("w") == 7
    assert returned < bob.records().get(bob.records().runs(1)[0]["id"])["ended"]  # back before its run ended


def test_an_env_is_built_by_the_broker_once_for_everyone_who_asks(alice, bob, broker):
    """--pip by URL (a wheel served here): built on the broker's side into an image both users' runs share."""
    served = Path(tempfile.mkdtemp(prefix="jx-broker-wheel-"))
    served.chmod(0o755)
    wheel = make_wheel(served, "jxshared", "1.0", f"TOKEN = {time.time_ns()!r}\n")  # a new env for each session
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(served)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: _answers(port), "the wheel's server")
        pip = f"--pip 'jxshared @ http://127.0.0.1:{port}/{wheel.name}#sha256={digest}'"
        first = alice.run(f"{SANDBOX} {pip}\nimport jxshared\njxshared.TOKEN", timeout=300, check=True)
        second = bob.run(f"{SANDBOX} {pip}\nimport jxshared\njxshared.TOKEN", timeout=300, check=True)
        local = alice.run(f"{SANDBOX} --pip {served}/{wheel.name}\nprint('ran')")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(served, ignore_errors=True)
    assert first.result_text == second.result_text
    assert "building image jupyter-exec/env:" in first.stderr and "building" not in second.stderr, second.stderr
    assert bob.run(f"{SANDBOX}\nimport jxshared").error["ename"] == "ModuleNotFoundError"  # the base is untouched
    assert "ran" not in local.stdout and "local wheels cannot go through the broker" in local.stderr


def test_an_image_named_alone_is_the_one_the_run_starts_from(bob, broker):
    """--image without --pip: the run starts from that image, the one its audit line names (the
    broker once ran its own base while the audit named the image asked for)."""
    client = docker.from_env()
    image = derived_image(client, "jupyter-exec/test-marked", "RUN echo marked > /etc/jx-test-marker")
    try:
        cell = bob.run(f"{SANDBOX} --image {image}\nprint(open('/etc/jx-test-marker').read().strip())", timeout=120)
    finally:
        client.images.remove(image, force=True)
    assert cell.error is None and cell.stdout == "marked\n", (cell.error, cell.stdout)
    run = json.loads(bob.records().get(bob.last_run()["id"])["details"])["broker_run"]

    def audited() -> list[dict]:  # written once the kernel has its answer
        return [line for line in broker.audit_lines() if line["op"] == "run" and line.get("run") == run]

    _until(audited, "the run's audit line")
    assert audited()[0]["image"] == image and audited()[0]["status"] == "succeeded", audited()


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    except OSError:
        return False
    return True


def test_explore_runs_its_nodes_in_parallel_through_the_broker(bob, broker):
    cell = bob.run(
        "from jupyter_exec import explore\n"
        "t = explore(lambda parent: 'import time\\ntime.sleep(1)\\n0.5', budget=4, max_parallel=2, "
        "backend='container', trace='broker', progress=False)\n"
        "sorted(str(n.status) for n in t.nodes.values())",
        check=True,
    )
    assert cell.result_text == str(["succeeded"] * 4)
    runs = broker.admin({"op": "runs", "user": USERS[1], "finished": True, "limit": 4})["runs"]
    assert len(runs) == 4 and all(row["status"] == "succeeded" for row in runs)
    overlapped = sorted((row["created"], row["created"] + row["duration"]) for row in runs)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(overlapped)), overlapped


def test_map_and_the_cache_of_identical_runs_through_the_broker(alice, broker):
    mapped = alice.run(
        "import jupyter_exec\n"
        "jupyter_exec.map('item * item', range(6), backend='container', max_parallel=2, progress=False)",
        check=True,
    )
    assert mapped.result_text == "[0, 1, 4, 9, 16, 25]"
    tag = uuid.uuid4().hex[:8]
    cell = f"{SANDBOX} --cache\nprint('ran {tag}')\n6 * 7"
    before = len(broker.admin({"op": "runs", "user": USERS[0], "finished": True, "limit": 1000})["runs"])
    first, second = alice.run(cell, check=True), alice.run(cell, check=True)
    assert first.stdout == second.stdout == f"ran {tag}\n" and first.result_text == second.result_text == "42"
    after = len(broker.admin({"op": "runs", "user": USERS[0], "finished": True, "limit": 1000})["runs"])
    assert after == before + 1  # the second came from the kernel's cache: the broker ran it once


def test_interrupt_cancels_the_run_at_the_broker(bob, broker):
    msg_id = bob.start(f"{SANDBOX} --name long\n{HOSTNAME}time.sleep(60)")
    _, container = _going(broker, USERS[1])
    assert _exists(container)
    started = time.monotonic()
    bob.km.interrupt_kernel()
    reply = bob.finish(msg_id)
    assert reply["status"] == "error" and time.monotonic() - started < 15
    runs = broker.admin({"op": "runs", "user": USERS[1], "finished": True})["runs"]
    assert runs[0]["name"] == "long" and runs[0]["status"] == "cancelled"
    assert not _exists(container)


def _until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for: {what}"
        time.sleep(0.3)  # two requests a pass: well under the broker's rate limit


def _going(broker: Broker, user: str) -> tuple[int, str]:
    """``user``'s run once it is going at the broker and has printed, and the first word it printed (the
    container's id, for a cell that starts with ``HOSTNAME``: an engine names a container's host by its id)."""
    found: dict = {}

    def printed() -> bool:
        going = [row for row in broker.admin({"op": "runs", "user": user})["runs"] if row["status"] == "running"]
        text = broker.admin({"op": "logs", "run": going[0]["id"]})["text"] if going else ""
        found.update(run=going[0]["id"], word=text.split()[0]) if text.strip() else None
        return bool(found)

    _until(printed, f"a run of {user} going")
    return found["run"], found["word"]


def _exists(container: str) -> bool:
    return bool(docker.from_env().api.containers(all=True, filters={"id": container}))


def test_a_ceiling_holds_against_the_users_own_settings(alice, broker):
    """The broker's 1g holds over JX_POLICY (a looser file), %config, and a hand-made request."""
    asked = alice.run(f"{SANDBOX} --mem 4g\nprint('ran')")
    assert "ran" not in asked.stdout
    assert asked.stderr.startswith(
        f"UsageError: --mem 4g is above the administrator's ceiling of 1g (policy {broker.policy})"
    )
    alice.run("%config ExecConfig.mem = '64g'", check=True)
    try:
        limit = alice.run(f"{SANDBOX}\nint(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read())", check=True)
    finally:
        alice.run("%config ExecConfig.mem = '2g'", check=True)
    assert int(limit.result_text) == 1 << 30
    (refused,) = raw(USERS[0], broker, {"op": "run", "code": "print('ran')", "limits": {"memory": 64 << 30}})
    assert refused[0]["t"] == "error" and refused[0]["status"] == 403 and "ceiling of 1g" in refused[0]["message"]
    (bad,) = raw(USERS[0], broker, {"op": "run", "code": "1", "limits": {"memory": "lots"}})
    assert bad[0]["status"] == 400 and "limits.memory" in bad[0]["message"]


def test_users_cannot_see_read_or_cancel_each_others_runs(alice, bob, broker):
    alice.run(f"{SANDBOX}\n'mine'", check=True)
    msg_id = bob.start(f"{SANDBOX} --name bobs\nimport time\nprint('secret', flush=True)\ntime.sleep(8)\n'done'")
    run_id, _ = _going(broker, USERS[1])
    listed, log, cancel, show = raw(
        USERS[0], broker,
        {"op": "runs", "finished": True}, {"op": "logs", "run": run_id}, {"op": "cancel", "run": run_id},
        {"op": "show", "run": run_id},
    )  # fmt: skip
    assert all(row["user"] == USERS[0] for row in listed[0]["runs"]) and listed[0]["runs"]
    for answer in (log, cancel, show):
        assert answer[0]["t"] == "error" and answer[0]["status"] == 404, answer
    (others,) = raw(USERS[0], broker, {"op": "runs", "user": USERS[1]})
    assert others[0]["status"] == 403
    assert USERS[1] not in alice.run("%jx runs", check=True).stdout
    alice.run(f"%jx cancel {run_id}")  # her kernel's run numbers are hers: nothing of bob's to reach
    assert "secret" not in alice.run(f"%jx logs {run_id}").stdout
    assert bob.finish(msg_id)["status"] == "ok"
    (mine,) = raw(USERS[1], broker, {"op": "logs", "run": run_id})
    assert mine[0]["text"] == "secret\n"


def test_a_users_third_run_waits_while_another_user_starts_at_once(broker):
    sleep = {"op": "run", "code": "import time\ntime.sleep(3)", "limits": {}}
    alices = raw(USERS[0], broker, sleep, sleep, sleep, background=True)
    time.sleep(1.0)
    (bobs,) = raw(USERS[1], broker, {"op": "run", "code": "'at once'", "limits": {}})
    out, err = alices.communicate(timeout=60)
    assert alices.returncode == 0, err
    events = json.loads(out)
    kinds = [[e["t"] for e in run] for run in events]
    assert sorted(k.count("queued") for k in kinds) == [0, 0, 1], kinds  # whichever reached the broker last
    assert all(run[-1]["t"] == "end" and run[-1]["status"] == "succeeded" for run in events), events
    waited = next(run for run in events if any(e["t"] == "queued" for e in run))
    assert "your quota is 2" in next(e for e in waited if e["t"] == "queued")["why"]
    waited_running = next(e for e in waited if e["t"] == "running")["at"]
    assert waited_running >= min(run[-1]["at"] for run in events if run is not waited) - 0.05
    assert [e["t"] for e in bobs] == ["accepted", "running", "end"]
    assert bobs[-1]["at"] < waited_running  # bob ran while alice's third waited


def test_the_audit_log_has_a_line_per_request_of_both_users(alice, bob, broker):
    alice.run(f"{SANDBOX}\n'audited'", check=True)
    bob.run(f"{SANDBOX}\n'audited too'", check=True)
    bob.run(f"{SANDBOX} --mem 2g\n'refused'")
    lines = broker.audit_lines()
    runs = [line for line in lines if line["op"] == "run"]
    assert {line["user"] for line in runs} >= set(USERS)
    ran = next(line for line in reversed(runs) if line["user"] == USERS[0] and line["decision"] == "ran")
    for field in ("time", "image", "digest", "runtime", "limits", "code_hash", "status", "duration", "peak_memory"):
        assert field in ran, (field, ran)
    assert ran["status"] == "succeeded" and ran["digest"].startswith("sha256:") and ran["limits"]["memory"] == 1 << 30
    refused = next(line for line in reversed(runs) if line["user"] == USERS[1])
    assert refused["decision"] == "refused" and "--mem 2g is above the administrator's ceiling" in refused["reason"]
    bobs = [line for line in runs if line["user"] == USERS[1] and line["decision"] == "ran"]
    assert ran["runtime"] is None and bobs and {line["runtime"] for line in bobs} == {"runsc"}


def test_a_runtime_the_policy_forces_cannot_be_escaped(bob, broker):
    """jx-user2's section forces gVisor: every run of theirs is under it, and asking for another is refused."""
    kernel = bob.run(f"{SANDBOX}\nimport platform\nplatform.release()", check=True)
    assert kernel.result_text == "'4.4.0'"  # the kernel gVisor shows its guests
    (asked,) = raw(USERS[1], broker, {"op": "run", "code": "1", "limits": {}, "runtime": "runc"})
    assert asked[0]["status"] == 403 and "runs every container under runsc" in asked[0]["message"]


def test_a_killed_broker_leaves_no_run_running_and_no_container(alice, broker):
    sleep = {"op": "run", "code": "import time\nprint('going', flush=True)\ntime.sleep(120)", "limits": {}}
    clients = raw(USERS[0], broker, sleep, sleep, background=True)
    _until(lambda: len(broker.admin({"op": "runs", "user": USERS[0]})["runs"]) == 2, "both runs going")
    running = broker.admin({"op": "runs", "user": USERS[0]})["runs"]
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)
    out, _ = clients.communicate(timeout=30)
    assert all(run[-1]["t"] != "end" for run in json.loads(out))  # hung up on, not told it ended
    _until(lambda: not _containers(**{USER_LABEL: USERS[0]}), "no container outlives the broker")
    broker.start()
    for row in running:
        (shown,) = raw(USERS[0], broker, {"op": "show", "run": row["id"]})
        assert shown[0]["run"]["status"] == "failed" and "broker restarted" in shown[0]["run"]["error"]
    assert alice.run(f"{SANDBOX}\n'after the restart'", check=True).result_text == "'after the restart'"
    restarted = [
        line for line in broker.audit_lines() if line.get("reason", "") and "broker restarted" in line["reason"]
    ]
    assert {line["run"] for line in restarted} >= {row["id"] for row in running}


def test_a_stopped_broker_cancels_its_runs_and_records_them(broker):
    """SIGTERM (systemctl stop): the runs going end ``cancelled``, recorded so, their containers removed."""
    going = {"op": "run", "code": f"{HOSTNAME}time.sleep(120)", "limits": {}}
    client = raw(USERS[1], broker, going, background=True)
    run, container = _going(broker, USERS[1])
    assert broker.process is not None
    broker.process.terminate()
    broker.process.wait(30)
    out, _ = client.communicate(timeout=30)
    assert json.loads(out)[0][-1]["status"] == "cancelled"
    assert not _exists(container)
    broker.start()
    assert broker.admin({"op": "show", "run": run})["run"]["status"] == "cancelled"


def test_a_client_that_hangs_up_leaves_no_container(broker):
    """A kernel that dies mid-run (its connection closes): the run is cancelled, its container removed."""
    going = {"op": "run", "code": f"{HOSTNAME}time.sleep(120)", "limits": {}}
    client = raw(USERS[1], broker, going, background=True)
    run, container = _going(broker, USERS[1])
    assert _exists(container)
    client.kill()
    client.wait(10)
    _until(lambda: not _exists(container), "the hung-up run's container removed")
    _until(lambda: broker.admin({"op": "show", "run": run})["run"]["status"] != "running", "the run finished")
    assert broker.admin({"op": "show", "run": run})["run"]["status"] == "cancelled"


def test_a_kernel_shutting_down_cancels_its_runs_at_the_broker(broker):
    """Its runs still going are cancelled at the broker (not cut off as lost), and recorded
    ``cancelled`` by the broker and in the user's own store; their containers are removed."""
    kernel = UserKernel(USERS[0], {"JX_BROKER": broker.address})
    try:
        kernel.start(f"{SANDBOX} --bg --name leaving\n{HOSTNAME}time.sleep(120)")
        run, container = _going(broker, USERS[0])
        Kernel.shutdown(kernel)  # the kernel alone: its data directory is read below
        assert kernel.records().runs(1)[0]["status"] == "cancelled"
        assert broker.admin({"op": "show", "run": run})["run"]["status"] == "cancelled"
        _until(lambda: not _exists(container), "the run's container removed")
    finally:
        shutil.rmtree(kernel.data_dir, ignore_errors=True)


def test_admin_commands_list_and_cancel_anyones_run(broker):
    going = {"op": "run", "code": f"{HOSTNAME}time.sleep(120)", "limits": {}}
    client = raw(USERS[0], broker, going, background=True)
    run, container = _going(broker, USERS[0])
    cli = [sys.executable, "-m", "jupyter_exec.cli", "broker"]
    listed = subprocess.run([*cli, "runs", "--socket", str(broker.socket)], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and f"{run:>6}  {USERS[0]}" in listed.stdout, listed
    cancelled = subprocess.run(
        [*cli, "cancel", str(run), "--socket", str(broker.socket)], capture_output=True, text=True
    )
    assert cancelled.stdout == f"run {run}: cancelled (running)\n", cancelled
    out, _ = client.communicate(timeout=30)
    assert json.loads(out)[0][-1]["status"] == "cancelled"
    _until(lambda: not _exists(container), "the cancelled run's container removed")
    (big,) = raw(USERS[0], broker, {"op": "run", "code": "x" * (2 << 20), "limits": {}})
    assert big[0]["status"] == 400 and "at most" in big[0]["message"]
    for garbage in (b"not json\n", b'["a list"]\n', b'{"v": 9, "op": "run"}\n', b'{"v": 1, "op": "rm -rf"}\n'):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(broker.socket))
            sock.sendall(garbage)
            answer = json.loads(sock.makefile("rb").readline())
        assert answer["t"] == "error" and answer["status"] == 400, (garbage, answer)
    assert broker.admin({"op": "hello"})["user"] == "root"  # the broker goes on


def test_a_broker_upgraded_in_place_keeps_every_run_of_its_old_file():
    """A data directory the first broker left (its own runs table, a run going when it died): the
    runs are all there, still each user's own, the one going is finished and audited, and new
    runs go on above the old ids."""
    _can_run_brokers()
    old: dict[int, dict] = {}
    upgraded = Broker(lambda data: old.update(old_broker_file(data / "broker.sqlite3", USERS)))
    try:
        listed = upgraded.admin({"op": "runs", "finished": True})["runs"]
        assert [(r["id"], r["user"], r["name"]) for r in listed] == [
            (i, old[i]["user"], old[i]["name"]) for i in (3, 2, 1)
        ]
        going = upgraded.admin({"op": "show", "run": 3})["run"]
        assert going["status"] == "failed" and "broker restarted" in going["error"]
        assert any(
            line.get("run") == 3 and "broker restarted" in line.get("reason", "") for line in upgraded.audit_lines()
        )
        ((mine,),), ((theirs,),) = (raw(user, upgraded, {"op": "show", "run": 1}) for user in USERS)
        assert mine["run"]["status"] == "succeeded" and theirs["status"] == 404
        (ran,) = raw(USERS[1], upgraded, {"op": "run", "code": "6 * 7", "limits": {}})
        assert (ran[0]["t"], ran[0]["run"], ran[-1]["status"]) == ("accepted", 5, "succeeded")
    finally:
        upgraded.stop()


def _kernel_id(kernel: UserKernel) -> str:
    return str(kernel.eval("__import__('jupyter_exec').current_manager().kernel_id"))


def test_sessions_at_the_broker_are_each_users_own(alice, bob, broker):
    """Two users' sessions of one name are two sandboxes; neither user can list or end the other's."""
    try:
        for kernel, value in ((alice, 1), (bob, 2)):
            kernel.run(f"{SANDBOX} --session s\nmine = {value}", check=True)
        assert alice.run(f"{SANDBOX} --session s\nprint(mine)", check=True).stdout == "1\n"
        assert bob.run(f"{SANDBOX} --session s\nprint(mine)", check=True).stdout == "2\n"
        assert "\ns     broker" in alice.run("%jx sessions", check=True).result_text
        # bob asking for alice's kernel's sessions reaches only his own (his container backend's)
        kernel = _kernel_id(alice)
        for request in (
            {"op": "end", "kernel": kernel, "session": "s"},
            {"op": "end", "kernel": kernel, "session": None},
        ):
            raw(USERS[1], broker, request)
        (listed,) = raw(USERS[1], broker, {"op": "sessions", "kernel": kernel, "session": None})
        assert listed[0]["sessions"] == []
        assert alice.run(f"{SANDBOX} --session s\nprint(mine)", check=True).stdout == "1\n"
        refused = alice.run(f"{SANDBOX} --session s --mem 512m\nprint('ran')")
        assert refused.stderr.startswith("UsageError: --mem: session s runs with --mem 1g"), refused
    finally:
        for kernel in (alice, bob):
            kernel.run("%jx end s")
    assert not [
        c for c in _containers(**{USER_LABEL: USERS[0]}) if "session" in c["Labels"].get("jupyter-exec.run", "")
    ]


def test_a_session_counts_toward_the_users_quota_while_it_lives(alice, broker):
    """The policy's quota is two runs at once: a session holds one of them from its first cell to its end."""
    try:
        alice.run(f"{SANDBOX} --session held\nx = 1", check=True)
        alice.run(f"{SANDBOX} --session held2\nx = 1", check=True)
        waiting = raw(USERS[0], broker, {"op": "run", "code": "'after'", "limits": {}}, background=True)
        time.sleep(3)
        assert waiting.poll() is None, "a third run started while two sessions held the quota of two"
        alice.run("%jx end held", check=True)
        out, _ = waiting.communicate(timeout=60)
        (events,) = json.loads(out)
        assert [e["t"] for e in events][:2] == ["accepted", "queued"] and events[-1]["status"] == "succeeded"
        assert "your quota is 2" in events[1]["why"]
    finally:
        alice.run("%jx end held")
        alice.run("%jx end held2")
