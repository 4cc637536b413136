"""Ray clusters for tests: a head and worker nodes started with ``ray start``, each in a
process group of its own so that a test can kill one node, or the head, and nothing of it
stays behind (``stop`` kills the group, whatever it started).

Started the way a user starts a cluster, never through jupyter-exec: the kernel under test
connects by address. Token authentication is on (Ray's default for ``ray start --head``); the
nodes and the kernels get ``RAY_AUTH_MODE=token`` and Ray's token file.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

RAY_CLI = Path(sys.executable).with_name("ray")
TOKEN_ENV = {"RAY_AUTH_MODE": "token"}


@functools.cache
def ensure_token() -> None:
    """Ray's token file, made as a user makes it for local work when there is none yet: a fresh
    machine has none until some local ``ray.init`` writes it, and a head in token mode will not
    start without it."""
    subprocess.run([str(RAY_CLI), "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, check=True)


class RayProcess:
    """One ``ray start --block`` (a head or a node) and everything it started."""

    def __init__(self, args: list[str], temp_dir: Path | None = None) -> None:
        self.args = args
        ensure_token()
        extra = [f"--temp-dir={temp_dir}"] if temp_dir else []
        self.process = subprocess.Popen(
            [str(RAY_CLI), "start", "--block", "--disable-usage-stats", *args, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **TOKEN_ENV},
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def node_id(self) -> str | None:
        """The id of the node this process runs (its raylet's), once the raylet has started."""
        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                if process.info["name"] == "raylet" and os.getpgid(process.pid) == self.process.pid:
                    flags = [arg for arg in process.info["cmdline"] or [] if arg.startswith("--node_id=")]
                    return flags[0].split("=", 1)[1] if flags else None
            except (ProcessLookupError, psutil.Error):
                continue
        return None

    def kill(self) -> None:
        """SIGKILL to the whole group: the node is gone at once, as when its machine dies."""
        self.stop(signal.SIGKILL)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """Stop the group by ``how`` (SIGKILL after 10 s), then what it started in groups of their own:
        the raylet puts each worker in one. All is gone when this returns (a worker left dying
        would write in the temp dir after its caller removed it)."""
        try:
            started = psutil.Process(self.process.pid).children(recursive=True)
            os.killpg(self.process.pid, how)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        processes = {*started, *(p for p in psutil.process_iter() if _group_of(p) == self.process.pid)}
        for process in processes:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        deadline = time.monotonic() + 10
        while any(_running(p) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)


def _group_of(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


def _running(process: psutil.Process) -> bool:
    """Not gone, and not a zombie (which writes nothing; its parent may never reap it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_head(
    port: int, temp_dir: Path, *, num_cpus: int = 1, resources: dict | None = None, gpus: int = 0
) -> RayProcess:
    """A head on 127.0.0.1:``port``, its raylet registered (drivers can connect), within 90 s a try.

    Tried up to ``HEAD_TRIES`` times: under load the raylet exits before it registers when its
    dashboard agent takes more than Ray's fixed 15 s to write its port files (ray-project/ray#65983,
    not configurable); each failure says what the raylet said."""
    failures = []
    for _ in range(HEAD_TRIES):
        try:
            return _start_head(port, temp_dir, num_cpus=num_cpus, resources=resources, gpus=gpus)
        except AssertionError as failure:
            failures.append(f"{failure}{_raylet_said(temp_dir)}")
    raise AssertionError(f"the Ray head did not start in {HEAD_TRIES} tries: " + "; ".join(failures))


HEAD_TRIES = 3


def _start_head(port: int, temp_dir: Path, *, num_cpus: int, resources: dict | None, gpus: int) -> RayProcess:
    head = RayProcess(
        [
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={gpus}",
            f"--resources={json.dumps(resources or {})}",
            "--include-dashboard=false",
            # Ports of its own for what would take Ray's fixed defaults: another head on this machine
            # (another test session's) holds those, and this one's raylet would die waiting for them.
            *(f"--{name}={_free_port()}" for name in _AGENT_PORTS),
        ],
        temp_dir,
    )
    deadline = time.monotonic() + 90
    try:
        while not listening(port):
            assert head.alive(), "ray start --head exited"
            assert time.monotonic() < deadline, "the Ray head did not come up in 90 s"
            time.sleep(0.3)
        while not _registered(port):
            assert head.alive(), "ray start --head exited before its raylet registered"
            assert time.monotonic() < deadline, "the Ray head's raylet did not register in 90 s"
            time.sleep(0.5)
    except BaseException:
        head.kill()  # what it started so far goes with it
        raise
    return head


def _registered(port: int) -> bool:
    """Whether the head's raylet has registered with its GCS (False while the GCS does not answer)."""
    import grpc

    try:
        return bool(live_nodes(f"127.0.0.1:{port}", "node:__internal_head__"))
    except grpc.RpcError:
        return False


def _raylet_said(temp_dir: Path | None) -> str:
    """The raylet's last fatal line in its log under ``temp_dir`` (Ray's default: /tmp/ray), if any."""
    logs = (temp_dir or Path("/tmp/ray")) / "session_latest" / "logs"
    for name in ("raylet.out", "raylet.err"):
        try:
            lines = (logs / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        fatal = [line for line in lines if "Check failed" in line or "Timed out" in line or " F " in line]
        if fatal:
            return f" (raylet: {fatal[-1].strip()[-300:]})"
    return ""


_AGENT_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_node(address: str, *, num_cpus: int = 1, resources: dict | None = None) -> RayProcess:
    """A worker node joining ``address`` (it registers a few seconds later: wait for it).

    Each node has an address of its own on the loopback network (127.0.0.2, .3, ...), as a
    machine of its own would: a driver on this machine then attaches to the head's raylet,
    never to a node a test may kill (a driver cannot live without its raylet), and no two
    nodes' dashboard agents want the same port."""
    global _nodes_started
    _nodes_started += 1
    return RayProcess(
        [
            f"--address={address}",
            f"--node-ip-address=127.0.0.{1 + _nodes_started}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources or {})}",
        ]
    )


_nodes_started = 0


def live_nodes(address: str, resource: str) -> list[str]:
    """The ids of the live nodes that declare ``resource``, as the GCS at ``address`` knows them."""
    with _Gcs(address) as gcs:
        reply = gcs.nodes.GetAllNodeInfo(gcs.pb.GetAllNodeInfoRequest(), timeout=10, metadata=gcs.auth)
    return [n.node_id.hex() for n in reply.node_info_list if n.state == 0 and resource in n.resources_total]


def wait_for_nodes(address: str, resource: str, count: int = 1, seconds: float = 90) -> list[str]:
    """The ids of the ``count`` live nodes with ``resource``, once that many have registered and
    no more are live (a killed node is marked dead some seconds after it goes)."""
    deadline = time.monotonic() + seconds
    while len(found := live_nodes(address, resource)) != count:
        assert time.monotonic() < deadline, f"not {count} live nodes with {resource} within {seconds:g} s: {found}"
        time.sleep(0.5)
    return found


def driver_left(address: str, pid: int) -> list[str]:
    """What the cluster at ``address`` (its own, of this machine) still holds of the driver ``pid``: its
    job not marked dead, actors of its jobs not dead (a killed driver's job ends, and its actors with it)."""
    with _Gcs(address) as gcs:
        jobs = gcs.jobs.GetAllJobInfo(gcs.pb.GetAllJobInfoRequest(), timeout=10, metadata=gcs.auth).job_info_list
        mine = {job.job_id: job for job in jobs if job.driver_pid == pid}
        actors = gcs.actors.GetAllActorInfo(gcs.pb.GetAllActorInfoRequest(), timeout=10, metadata=gcs.auth)
    left = [f"Ray job {job_id.hex()} of the driver not ended" for job_id, job in mine.items() if not job.is_dead]
    return left + [
        f"Ray actor {a.actor_id.hex()} ({a.class_name}) of the driver's job not dead"
        for a in actors.actor_table_data
        if a.job_id in mine and a.state != a.DEAD
    ]


def cluster_metadata(address: str, replace: dict | None = None) -> dict:
    """The versions the cluster records for drivers to check (``replace``: record these instead)."""
    with _Gcs(address) as gcs:
        key, namespace = b"CLUSTER_METADATA", b"cluster"
        if replace is not None:
            request = gcs.pb.InternalKVPutRequest(
                key=key, value=json.dumps(replace).encode(), overwrite=True, namespace=namespace
            )
            gcs.kv.InternalKVPut(request, timeout=10, metadata=gcs.auth)
        reply = gcs.kv.InternalKVGet(
            gcs.pb.InternalKVGetRequest(key=key, namespace=namespace), timeout=10, metadata=gcs.auth
        )
        return json.loads(reply.value)


class _Gcs:
    """A gRPC channel to a cluster's GCS with Ray's token, as the test's own window on it."""

    def __init__(self, address: str) -> None:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

        token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).read_text().strip()
        self.auth = (("authorization", f"Bearer {token}"),)
        self.channel = grpc.insecure_channel(address)
        self.pb = gcs_service_pb2
        self.kv = gcs_service_pb2_grpc.InternalKVGcsServiceStub(self.channel)
        self.nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(self.channel)
        self.jobs = gcs_service_pb2_grpc.JobInfoGcsServiceStub(self.channel)
        self.actors = gcs_service_pb2_grpc.ActorInfoGcsServiceStub(self.channel)

    def __enter__(self) -> _Gcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
