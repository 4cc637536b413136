"""Chaos: kernels and the broker SIGKILLed at random moments of a run's life, as the OOM killer, a
crashed extension or a hub's culler kill them; after each kill, within 10 s, nothing of the dead
process is left and the store is whole (issue 27).

A round starts a kernel (or uses the broker's), runs a window's cell and kills the kernel (or the
broker) at a moment drawn at random across that window: the cell sent, its run going, the cell
returned. Then, for up to ``DEADLINE`` seconds, it looks for what the dead process left: its
containers in any state, processes started for it, slot and keeper folders, scratch directories,
cgroups, mounts, a Ray task still running, and the store: every run the dead kernel started must
read as finished (``failed``, "the kernel running it exited before it finished") to the side
panel opening the store, and the file must pass SQLite's integrity check.

Every round draws from its own generator, seeded by ``SEED-BACKEND-ROUND``: ``scripts/chaos
--seed S --backend B --round N`` replays one round exactly (the moment, the window), as the
failure's line says. ``scripts/chaos`` runs this module; ``tests/test_chaos.py`` a short version.

The windows are a table per target (``WINDOWS``): a feature that opens a new window in a run's
life adds its row there (as sessions, their forks and a host list's gate have), and what it may
leave to the round's checks.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import NO_NAMESPACES, Kernel, make_wheel, owned_processes

from jupyter_exec.status import FINAL

DEADLINE = 10.0  # seconds after a kill by which nothing may be left (the bound)
_COLUMNS = ("id", "owner_pid", "status", "error", "ended")
LATE = 20.0  # seconds more a round watches what was left, to say when it went
ORPHANED = "the kernel running it exited before it finished"
TRIGGER_WAIT = 90.0  # seconds a window's moment may take to come (a busy machine, a cold pool)


@dataclass(frozen=True)
class Window:
    """One stretch of a run's life: ``cell`` is executed, and the kill lands ``uniform(0, spread)``
    seconds after ``after``: ``sent`` (the cell was sent), ``running`` (its run is recorded
    running), ``done`` (the cell returned: what its backend does next, such as refilling a pool).
    ``setup``: a cell run to its end first (a session's first cell, for a window inside it)."""

    name: str
    cell: str
    after: str = "sent"
    spread: float = 1.0
    setup: str = ""


STREAM = "import time\nfor i in range(200):\n    print(i, flush=True)\n    time.sleep(0.05)"
# A run is marked running in the store only once it has lasted (cancel_watch.DELAY): the cell
# lasts that long before it makes its result, so the kill can land while it is sent and decoded.
SLOW_RESULT = "import time\ntime.sleep(0.8)\nbig = list(range(400000))"


def sandbox_windows(magic: str, backend: str) -> tuple[Window, ...]:
    """The windows of a ``%%sandbox`` backend's run (``magic``: the cell's first line)."""
    return (
        Window("run starting", f"{magic}\nprint('started')", "sent", 1.5),
        Window("output streaming", f"{magic}\n{STREAM}", "running", 3.0),
        Window("results decoding", f"{magic} --out big\n{SLOW_RESULT}", "running", 2.0),
        Window("cell returned (pool refills)", f"{magic}\nprint('done')", "done", 1.0),
        Window("--bg run", f"{magic} --bg\n{STREAM}", "running", 2.0),
        Window(
            "map batches",
            f"import jupyter_exec\njupyter_exec.map('import time; time.sleep(0.2); item', range(12),"
            f" backend={backend!r}, batch_size=1, max_parallel=2)",
            "running",
            3.0,
        ),
        Window(
            "env build",
            f"{magic} --pip {{wheel}} --working-dir {{workdir}}\nimport chaoswheel\nprint(open('token').read())",
            "sent",
            4.0,
        ),
    )


def session_windows(magic: str, forks: bool, hosts: bool = True) -> tuple[Window, ...]:
    """The windows of a sandbox session (``%%sandbox --session``) on a backend, and of a run with a
    host list while its network gate is up; ``forks``: the backend makes forks (``%jx fork``);
    ``hosts``: it enforces host lists here (the process sandbox refuses them without namespaces)."""
    session = f"{magic} --session chaos"
    first = f"{session}\nreadings = list(range(1000))"
    windows = (
        Window("session starting", f"{session}\nprint('started')", "sent", 2.0),
        Window("session cell running", f"{session}\n{STREAM}", "running", 3.0, first),
        Window("idle session", "print('idle')", "done", 1.0, first),
        Window(
            "host list, gate up",
            f"{magic} --network chaos.invalid\nimport urllib.request\ntry:\n"
            "    urllib.request.urlopen('http://chaos.invalid/', timeout=5)\nexcept OSError as e:\n"
            f"    print('gate said', e)\n{STREAM}",
            "running",
            3.0,
        ),
    )
    fork = Window("fork being made", "%jx fork chaos copy", "sent", 0.5, first)
    if not hosts:
        windows = tuple(w for w in windows if w.name != "host list, gate up")
    return (*windows, fork) if forks else windows


def ray_windows() -> tuple[Window, ...]:
    """A Ray task's windows; its worker writes its pid where the round looks for it."""
    pid = "import os; open({pids!r} + '/' + str(os.getpid()), 'w').close()\n"
    return (
        Window("task starting", f"%%rayrun\n{pid}print('started')", "sent", 2.0),
        Window("output relayed", f"%%rayrun\n{pid}{STREAM}", "running", 3.0),
        Window("results decoding", f"%%rayrun --out big\n{pid}{SLOW_RESULT}", "running", 2.0),
    )


CONTAINER = "%%sandbox --backend container"
GVISOR = f"{CONTAINER} --runtime runsc"
SECCOMP = "%%sandbox --backend seccomp"
WINDOWS: dict[str, tuple[Window, ...]] = {
    "process": sandbox_windows(SECCOMP, "seccomp") + session_windows(SECCOMP, forks=True, hosts=not NO_NAMESPACES),
    "docker": sandbox_windows(CONTAINER, "container") + session_windows(CONTAINER, forks=False),
    "podman": sandbox_windows(CONTAINER, "container") + session_windows(CONTAINER, forks=False),
    "gvisor": sandbox_windows(GVISOR, "container") + session_windows(GVISOR, forks=False),
    "ray": ray_windows(),
    # a run the broker relays, then a session and a host list's gate at the broker (whose sessions
    # end with their kernel's lifeline, and with the broker)
    "broker": sandbox_windows(CONTAINER, "container")[:5] + session_windows(CONTAINER, forks=False),
}
# A round on the broker kills the kernel whose run it relays, or the broker itself.
BROKER_VICTIMS = ("kernel", "broker")


@dataclass
class Round:
    """One kill and what it found."""

    backend: str
    number: int
    window: str
    victim: str
    moment: str = ""
    left: list[str] = field(default_factory=list)
    clean_after: float | None = None


class Chaos:
    """One backend's rounds, with what they share (a work directory, a store, a broker, a Ray head)."""

    def __init__(self, backend: str, seed: int, work: Path) -> None:
        self.backend, self.seed = backend, seed
        self.work = work / backend
        self.work.mkdir(parents=True, exist_ok=True)
        self.data = self.work / "data"
        self.env: dict[str, str] = {"JX_POOL_SIZE": "1"}
        self.engine = None
        self.broker: Broker | None = None
        self.ray: object | None = None

    def __enter__(self) -> Chaos:
        if self.backend in ("docker", "podman", "gvisor", "broker"):
            from jupyter_exec.backends.container import ContainerBackend
            from jupyter_exec.config import ExecConfig

            self.engine = ContainerBackend(ExecConfig(pool_size=0)).engine
        if self.backend == "broker":
            self.broker = Broker(self.work / "broker")
            self.env["JX_BROKER"] = self.broker.address
        if self.backend == "ray":
            from conftest import free_port
            from ray_processes import TOKEN_ENV, start_head

            port = free_port()
            self.ray = start_head(port, self.work / "ray", num_cpus=2)  # a short path: Ray's sockets live there
            self.env.update(JX_RAY_ADDRESS=f"127.0.0.1:{port}", **TOKEN_ENV)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.ray is not None:
            self.ray.stop()  # type: ignore[attr-defined]

    def round(self, number: int) -> Round:
        windows = list(WINDOWS[self.backend])
        random.Random(f"{self.seed}-{self.backend}").shuffle(windows)  # every window in turn
        window = windows[number % len(windows)]
        rng = random.Random(f"{self.seed}-{self.backend}-{number}")
        victim = rng.choice(BROKER_VICTIMS) if self.backend == "broker" else "kernel"
        delay = rng.uniform(0, window.spread)
        token = secrets.token_hex(4)
        workdir, pids = self.work / f"wd-{token}", self.work / "pids"
        workdir.mkdir()
        (workdir / "token").write_text(token)  # a new env each round: its hash is new
        wheel = make_wheel(workdir, "chaoswheel", "1.0", f"TOKEN = {token!r}\n")
        pids.mkdir(exist_ok=True)
        for stale in pids.iterdir():
            stale.unlink()
        cell = window.cell.format(workdir=workdir, pids=str(pids), wheel=wheel) + f"\n# chaos round {number}, {token}"
        found = Round(self.backend, number, window.name, victim)
        kernel = Kernel(self.data, self.work, self.env)
        pid = kernel.pid
        try:
            if window.setup:
                kernel.run(window.setup, TRIGGER_WAIT, check=True)
            sent = kernel.client.execute(cell)
            found.moment = self._wait_for(kernel, window.after, sent) + f" + {delay:.2f} s"
            time.sleep(delay)
            doomed = self.broker.pid if victim == "broker" and self.broker else pid
            os.kill(doomed, signal.SIGKILL)
            killed, killed_at = time.monotonic(), time.time()
        finally:
            kernel.client.stop_channels()
            if victim == "kernel" or sys.exc_info()[0] is not None:
                kernel.km.provisioner.process.kill()  # type: ignore[union-attr]
                kernel.km.provisioner.process.wait()  # type: ignore[union-attr]
                kernel.km.cleanup_resources()
        if victim == "broker":
            assert self.broker is not None
            self.broker.process.wait()
            left = self._until_clean(killed, lambda: self._broker_left(doomed))
            self.broker.start()  # as its service manager would: it closes what it had recorded
            kernel.km.shutdown_kernel(now=True)
        else:
            left = self._until_clean(killed, lambda: self._left(pid, pids, killed_at))
        found.left, found.clean_after = left
        if not found.moment.startswith(window.after):  # the kill landed outside its window: not a round
            found.left.insert(0, f"the window's moment never came ({found.moment})")
        shutil.rmtree(workdir, ignore_errors=True)
        return found

    def _wait_for(self, kernel: Kernel, after: str, sent: str) -> str:
        """Block until the window's moment comes (or ``TRIGGER_WAIT`` passes); what came."""
        if after == "sent":
            return "sent"
        deadline = time.monotonic() + TRIGGER_WAIT
        if after == "done":
            try:
                kernel.collect(sent, TRIGGER_WAIT)
                return "done"
            except TimeoutError:
                return "not done in time"
        records = kernel.records()
        while time.monotonic() < deadline:
            if any(
                r["owner_pid"] == kernel.pid and r["status"] == "running" for r in records.runs(5, columns=_COLUMNS)
            ):
                return "running"
            time.sleep(0.05)
        return "never running"

    def _until_clean(self, killed: float, left: Callable[[], list[str]]) -> tuple[list[str], float | None]:
        """What was left ``DEADLINE`` seconds after the kill (nothing: ``[]``), and when all was gone
        (watched up to ``LATE`` seconds more, for the report; None: not even then)."""
        late: list[str] = []
        while True:
            now = left()
            if not now:
                return late, time.monotonic() - killed
            if time.monotonic() - killed > DEADLINE:
                late = late or now
            if time.monotonic() - killed > DEADLINE + LATE:
                return late, None
            time.sleep(0.2)

    def _left(self, pid: int, pids: Path, killed: float) -> list[str]:
        """What of the dead kernel ``pid`` is still there."""
        left = [f"process {p} started for it" for p in owned_processes(pid)]
        left += _containers(self.engine, pid)
        left += _folders(pid)
        left += _mounts(pid)
        left += _cgroups(pid)
        left += _sockets(pid)
        left += [f"Ray worker {p.name} still running its task" for p in pids.iterdir() if _alive(int(p.name))]
        if self.ray is not None:
            from ray_processes import driver_left

            left += driver_left(self.env["JX_RAY_ADDRESS"], pid)
        if self.broker is not None:  # what the broker ran for the kernel ends with it
            left += [c for c in _containers(self.engine, self.broker.pid) if not c.endswith(", pool)")]
            left += [f"broker's {line}" for line in _unfinished(self.broker.data / "broker.sqlite3")]
        return left + _store(self.data, pid, killed)

    def _broker_left(self, pid: int) -> list[str]:
        """What of the dead broker ``pid`` is still there (its own store is closed when it restarts),
        and the kernel's run it relayed, if not ended."""
        left = [f"process {p} started for the broker" for p in owned_processes(pid)]
        left += [f"kernel's {line}" for line in _unfinished(self.data / "runs.sqlite3")]
        return left + _containers(self.engine, pid) + _folders(pid) + _mounts(pid)


def _alive(pid: int) -> bool:
    from jupyter_exec._proc import pid_alive

    return pid_alive(pid)


def _containers(engine: object, pid: int) -> list[str]:
    """The containers of ``pid`` in any state: labelled with it, or made through its keeper."""
    if engine is None:
        return []
    api = engine.client.api  # type: ignore[attr-defined]
    listed = {c["Id"]: c for c in api.containers(all=True, filters={"label": f"jupyter-exec.owner-pid={pid}"})}
    for made in api.containers(all=True, filters={"label": "jupyter-exec.keeper"}):
        if made["Labels"]["jupyter-exec.keeper"].startswith(f"{pid}-"):
            listed[made["Id"]] = made
    return [
        f"container {c['Id'][:12]} ({c['State']}, {c['Labels'].get('jupyter-exec.run', 'probe')})"
        for c in listed.values()
    ]


def _folders(pid: int) -> list[str]:
    from jupyter_exec.backends.container.hostconfig import SLOT_ROOT

    return [f"folder {f}" for pattern in (f"slot-{pid}-*", f"keeper-{pid}-*") for f in SLOT_ROOT.glob(pattern)]


def _mounts(pid: int) -> list[str]:
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return [f"mount {line.split()[4]}" for line in mounts if f"slot-{pid}-" in line or f"jx-{pid}-" in line]


def _sockets(pid: int) -> list[str]:
    """Unix sockets still bound in the dead kernel's run folders (a run's network gate, a session's
    socket), whoever holds them: the folder may be gone while a process keeps the socket open."""
    from jupyter_exec.config import scratch_prefix

    marks = (f"/slot-{pid}-", f"/keeper-{pid}-", f"/{scratch_prefix(pid)}")
    paths = {line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:] if len(line.split()) > 7}
    return [f"socket {path}" for path in sorted(paths) if any(mark in path for mark in marks)]


def _cgroups(pid: int) -> list[str]:
    from jupyter_exec.backends.process.cgroups import cgroup_mode

    parents = set(cgroup_mode().parents.values())
    return [f"cgroup {path}" for parent in parents for path in parent.glob(f"jx-{pid}-*")]


def _store(data: Path, pid: int, killed: float) -> list[str]:
    """What is wrong with the store as the side panel finds it once ``pid`` is dead (at ``killed``,
    the wall clock): a run of the kernel not finished, or finished after the kill but not as an
    orphan; a damaged file; scratch left."""
    from jupyter_exec.config import ExecConfig, scratch_prefix
    from jupyter_exec.envs.cache import EnvIndex
    from jupyter_exec.server.queries import PanelQueries
    from jupyter_exec.store.records import RunRecords

    path = data / "runs.sqlite3"
    if not path.exists():
        return []
    PanelQueries(path).runs((), 1)  # the side panel lists the runs: what a dead kernel left is closed
    rows = [r for r in RunRecords(path).runs(1000, columns=_COLUMNS) if r["owner_pid"] == pid]
    wrong = [f"run {r['id']} {r['status']}" for r in rows if r["status"] not in FINAL]
    wrong += [
        f"run {r['id']} closed {r['status']} ({r['error']}), not failed ({ORPHANED})"
        for r in rows
        if (r["ended"] or 0) >= killed and (r["status"], r["error"]) != ("failed", ORPHANED)
    ]
    with sqlite3.connect(path) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        wrong.append(f"store damaged: {check}")
    envs = EnvIndex(path).all()  # an env is served only once ready: a half-built one must not read so
    wrong += [
        f"env {e['hash'][:8]} ready without its folder"
        for e in envs
        if e["status"] == "ready" and not Path(e["path"]).is_dir()
    ]
    wrong += [f"scratch {s}" for s in Path(ExecConfig().scratch_dir).glob(f"{scratch_prefix(pid)}*")]
    return wrong


def _unfinished(path: Path) -> list[str]:
    """The runs in the store at ``path`` not finished (a broker's, where every run's kernel is gone)."""
    from jupyter_exec.store.records import RunRecords

    return [f"run {r['id']} {r['status']}" for r in RunRecords(path).runs(1000) if r["status"] not in FINAL]


class Broker:
    """A broker of this user's (``jupyter-exec broker``) on a socket in ``home``."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.socket, self.data, self.home = home / "broker.sock", home / "data", home
        self.address = f"unix://{self.socket}"
        self.log = open(home / "broker.log", "ab")
        self.process: subprocess.Popen[bytes]
        self.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        command = [sys.executable, "-m", "jupyter_exec.cli", "broker", "--socket", str(self.socket)]
        self.process = subprocess.Popen([*command, "--data-dir", str(self.data)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start: " + (self.home / "broker.log").read_text()[-2000:])
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        self.log.close()


@contextmanager
def _workspace(keep: bool) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="jx-chaos-"))
    work.chmod(0o755)
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def run(seed: int, rounds: int, backends: list[str], only: int | None = None, keep: bool = False) -> list[Round]:
    """``rounds`` rounds per backend (or round ``only`` alone); every round, printed as it ends."""
    return list(rounds_of(seed, rounds, backends, only, keep))


def rounds_of(
    seed: int, rounds: int, backends: list[str], only: int | None = None, keep: bool = False
) -> Iterator[Round]:
    """``run``'s rounds as they end. The backends take turns, round by round, so that a long run
    stopped early has tried them alike."""
    print(f"chaos: seed {seed} (replay: scripts/chaos --seed {seed})", flush=True)
    with _workspace(keep) as work, ExitStack() as stack:
        chaoses = [stack.enter_context(Chaos(backend, seed, work)) for backend in backends]
        for number in [only] if only is not None else range(rounds):
            for chaos in chaoses:
                found = chaos.round(number)
                said = "LEFT" if found.left else "clean"
                said += f" in {found.clean_after:.1f} s" if found.clean_after is not None else " for good"
                line = f"{chaos.backend} round {number}: {found.victim} killed in {found.window!r} at {found.moment}"
                print(f"{line}: {said}", flush=True)
                for what in found.left:
                    replay = f"scripts/chaos --seed {seed} --backend {chaos.backend} --round {number}"
                    print(f"    {what} (replay: {replay})")
                yield found


def summary(done: list[Round]) -> str:
    """Kills per backend and window, and the failures."""
    kills = Counter((r.backend, r.window, r.victim) for r in done)
    lines = [f"{b:8} {w:32} {v:7} {n}" for (b, w, v), n in sorted(kills.items())]
    failed = [r for r in done if r.left]
    slowest = max((r.clean_after or 0.0 for r in done if not r.left), default=0.0)
    lines.append(f"{len(done)} kills, {len(failed)} left something; slowest clean-up {slowest:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the seed (default: a random one, printed)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend (default 3)")
    parser.add_argument("--backend", action="append", choices=sorted(WINDOWS), help="repeatable (default: all)")
    parser.add_argument("--round", type=int, default=None, help="replay this round alone")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID stops a soak as Ctrl-C does,
    signal.signal(signal.SIGINT, signal.default_int_handler)  # in the background too: its brokers and heads stopped
    done: list[Round] = []
    try:
        for found in rounds_of(seed, args.rounds, args.backend or sorted(WINDOWS), args.round, args.keep):
            done.append(found)
    except KeyboardInterrupt:
        print(f"chaos: stopped after {len(done)} rounds", flush=True)
        print(summary(done))
        return 130  # not a pass: the rounds asked for did not all run
    print(summary(done))
    return 1 if any(r.left for r in done) else 0


if __name__ == "__main__":
    sys.exit(main())
