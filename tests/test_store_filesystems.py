"""The store on network filesystems: detection, the journal mode used, where the file is kept,
and writers sharing it that lose nothing when one is killed.

The network filesystem here is real: sshfs over a loopback TCP connection to OpenSSH's
sftp-server (run as ``nobody``). NFS cannot be mounted on these machines (the kernel has no
nfs or nfsd filesystem), so the NFS and SMB cases are read from mountinfo lines as data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import free_port, require

from jupyter_exec.config import ExecConfig
from jupyter_exec.doctor import diagnose
from jupyter_exec.store.filesystems import filesystem_of, local_store_root, parse_mountinfo
from jupyter_exec.store.records import RunRecords

SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")

MOUNTINFO = r"""
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /home rw,relatime shared:2 - nfs4 filer:/home rw,vers=4.2,hard,local_lock=none
31 22 0:41 / /scratch rw,relatime - nfs filer:/scratch rw,vers=3,nolock,local_lock=all
32 22 0:42 / /win rw,relatime - cifs //srv/share rw,vers=3.1.1,nobrl
33 22 0:43 / /smb rw,relatime - smb3 //srv/other rw,vers=3.1.1
34 22 0:44 / /lustre rw - lustre mgs@tcp:/fs rw,flock
35 22 0:45 / /lustre2 rw - lustre mgs@tcp:/fs2 rw,localflock
36 22 0:46 / /mnt/with\040space rw - fuse.sshfs me@host:/ rw,user_id=0
37 22 0:47 / /dev/shm rw - tmpfs tmpfs rw
"""


def test_filesystems_are_told_apart_by_type_and_lock_options():
    mounts = {m.mountpoint: m for m in parse_mountinfo(MOUNTINFO)}
    # (network?, do POSIX locks reach the other hosts?)
    expected = {
        "/": (False, False),
        "/home": (True, True),  # NFSv4: rollback journal, the file stays in the home directory
        "/scratch": (True, False),  # NFS mounted nolock: kept on this machine
        "/win": (True, False),  # SMB without byte-range locks
        "/smb": (True, True),
        "/lustre": (True, True),
        "/lustre2": (True, False),
        "/mnt/with space": (True, False),  # sshfs; the mount point's escape is read back
        "/dev/shm": (False, False),
    }
    assert {point: (m.network, m.shares_locks) for point, m in mounts.items()} == expected


def test_a_store_on_a_local_disk_or_tmpfs_uses_wal(tmp_path):
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        for place in (tmp_path, shm):
            RunRecords(place / "runs.sqlite3").close()
            assert sqlite3.connect(place / "runs.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert ExecConfig(data_dir=str(place)).store_path == place / "runs.sqlite3"
    finally:
        shutil.rmtree(shm)


@pytest.fixture(scope="module")
def sshfs():
    """An sshfs mount over TCP on 127.0.0.1 of a directory served by sftp-server as ``nobody``."""
    require(
        all(shutil.which(tool) for tool in ("sshfs", "socat", "fusermount3"))
        and SFTP_SERVER.exists()
        and Path("/dev/fuse").exists(),
        "sshfs, socat and openssh-sftp-server (scripts/setup.d/45-store-faults.sh)",
    )
    require(os.geteuid() == 0, "root, to serve the export as nobody")
    base = Path(tempfile.mkdtemp(prefix="jx-sshfs-"))
    export, mount = base / "export", base / "mount"
    export.mkdir()
    mount.mkdir()
    base.chmod(0o755)
    shutil.chown(export, "nobody")
    port = free_port()
    server = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay", f"EXEC:{SFTP_SERVER},su=nobody"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "socat did not listen"
            time.sleep(0.1)
    # In the foreground, so that this fixture owns the process and nothing outlives the module.
    client = subprocess.Popen(["sshfs", "-f", "-o", f"directport={port}", f"127.0.0.1:{export}", str(mount)])
    try:
        while not os.path.ismount(mount):
            assert client.poll() is None and time.monotonic() < deadline + 20, "sshfs did not mount"
            time.sleep(0.1)
        yield mount
    finally:
        if subprocess.run(["fusermount3", "-u", str(mount)], timeout=30).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], timeout=30)  # a file left open: detach
        client.terminate()
        client.wait(10)
        server.terminate()
        server.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def test_on_sshfs_the_store_is_kept_on_this_machine_and_doctor_says_so(sshfs):
    data_dir = sshfs / "jx-data"
    found = filesystem_of(data_dir)
    assert found is not None and found.type == "fuse.sshfs" and not found.shares_locks
    config = ExecConfig(data_dir=str(data_dir))
    assert local_store_root() in config.store_path.parents
    RunRecords(config.store_path).close()
    report, _ = diagnose(config=config)
    store_lines = [line for line in report.splitlines() if "store" in line or "kept on this machine" in line]
    assert any(str(config.store_path) in line for line in store_lines), report
    assert any("kept on this machine" in line and "fuse.sshfs" in line for line in store_lines), report
    shutil.rmtree(config.store_path.parent)


WRITER = """
import sys
from jupyter_exec.status import Status
from jupyter_exec.store.records import RunRecords
store = RunRecords(sys.argv[1])
for i in range(int(sys.argv[3])):
    run = store.create_run(kernel=sys.argv[2], owner_pid=0, name=f"{sys.argv[2]}-{i}", backend="local",
                           isolation="none", spec={}, code="pass", code_hash="0")
    store.mark_running(run, None)
    store.finish_run(run, Status.SUCCEEDED)
    print(i, run, flush=True)
"""


def test_writers_sharing_a_store_on_sshfs_lose_nothing_when_one_is_killed(sshfs):
    path = sshfs / "shared" / "runs.sqlite3"  # opened directly: a rollback journal on a network filesystem
    RunRecords(path).close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    runs = 120
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(runs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }
    done_b = []
    for line in writers["b"].stdout:
        done_b.append(int(line.split()[0]))
        if len(done_b) == runs // 2:
            writers["b"].send_signal(signal.SIGKILL)
            break
    out_b, err_b = writers["b"].communicate(timeout=30)  # what it printed before it died
    done_b += [int(line.split()[0]) for line in out_b.splitlines()]
    out_a, err_a = writers["a"].communicate(timeout=300)
    assert writers["a"].returncode == 0 and len(out_a.splitlines()) == runs, err_a
    assert "locked" not in err_a + err_b and "Error" not in err_a

    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [row[0] for row in db.execute("SELECT name FROM runs")]
    assert len(names) == len(set(names)), "a run was recorded twice"
    assert {f"a-{i}" for i in range(runs)} <= set(names)
    assert {f"b-{i}" for i in done_b} <= set(names), "a run the killed writer finished is missing"
    assert len([n for n in names if n.startswith("b-")]) - len(done_b) <= 1  # at most the one under way
