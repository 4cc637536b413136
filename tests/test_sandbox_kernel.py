"""``%%sandbox`` through a real kernel: results, output, errors, limits, hostile cells."""

from __future__ import annotations

import uuid
from pathlib import Path

import cpu_rate
import hostile_calls
import pytest
from conftest import FD_OUTPUT, FD_OUTPUT_SEEN

from jupyter_exec.status import FINAL

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]
SECCOMP = "%%sandbox --backend seccomp"


@pytest.mark.parametrize("magic", ["", SECCOMP, "%%sandbox --backend local"])
def test_output_below_python_reaches_the_cell(kernel, magic):
    """What a C extension or a subprocess writes to fd 1 and 2 shows in the cell, in the kernel
    itself (ipykernel's fd capture: test kernels run without pytest's PYTEST_CURRENT_TEST, as a
    user's do) and in a sandbox."""
    cell = kernel.run(f"{magic}\n{FD_OUTPUT}", check=True)
    assert (set(cell.stdout.splitlines()), set(cell.stderr.splitlines())) == FD_OUTPUT_SEEN, cell


def test_remote_exception_is_also_the_builtin_type(kernel):
    catch = kernel.run(
        "try:\n    get_ipython().run_cell_magic('sandbox', '--backend seccomp', 'int(\"x\")')\n"
        "except ValueError as e:\n    print('caught', type(e).__name__)",
        check=True,
    )
    assert catch.stdout == "caught ValueError\n"


_CAUGHT = (
    "try:\n    get_ipython().run_cell_magic('sandbox', '--backend seccomp', {cell!r})\n"
    "except {builtin} as e:\n    print('caught', type(e).__name__, str(e), getattr(e, 'errno', ''))"
)


def test_a_remote_exception_is_also_its_nearest_builtin_base(kernel):
    """A class the kernel never imports (``socket.gaierror``, a cell's own) is caught as the
    built-in it derives from, with the message and errno it had; the cell shows it as before."""
    gaierror = "import socket\nraise socket.gaierror(-2, 'Name or service not known')"
    caught = kernel.run(_CAUGHT.format(cell=gaierror, builtin="OSError"), check=True)
    assert caught.stdout == "caught RemoteError gaierror: [Errno -2] Name or service not known -2\n"
    boom = "class Boom(KeyError):\n    pass\nraise Boom('x')"
    assert kernel.run(_CAUGHT.format(cell=boom, builtin="KeyError"), check=True).stdout == (
        "caught RemoteError Boom: 'x' \n"
    )
    shown = kernel.run(f"{SECCOMP}\n{gaierror}")
    assert shown.error["ename"] == "RemoteError", shown.error
    assert shown.error["evalue"] == "gaierror: [Errno -2] Name or service not known"
    assert any("socket.gaierror: [Errno -2] Name or service not known" in line for line in shown.error["traceback"])
    assert kernel.last_run()["error"] == "gaierror: [Errno -2] Name or service not known"


def test_interrupt_cancels_the_run(kernel):
    reply = kernel.interrupt_run(f"{SECCOMP}\nimport time\nprint('started', flush=True)\ntime.sleep(60)")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.last_run()["status"] == "cancelled"
    kernel.assert_no_run_processes()


@pytest.mark.parametrize(
    ("name", "options", "code", "status", "ename"),
    [
        ("socket", "", "import socket\nsocket.socket()", "failed", "PermissionError"),
        (
            "connect",
            "",
            "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)",
            "failed",
            "PermissionError",
        ),
        ("fork bomb", "--pids 64 --timeout 30", "import os\nwhile True:\n    os.fork()", "failed", "BlockingIOError"),
        (
            "memory",
            "--mem 256m",
            "block = bytearray(2 * 1024**3)\nblock[::4096] = b'x' * len(block[::4096])",
            "oom",
            "ResourceLimitError",
        ),
        ("spin", "--timeout 2", "while True:\n    pass", "timeout", "TaskTimeoutError"),
        (
            "ignores SIGTERM",
            "--timeout 1",
            "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
            "timeout",
            "TaskTimeoutError",
        ),
        ("cpu time", "--cpu-time 1 --timeout 30", "while True:\n    pass", "timeout", "TaskTimeoutError"),
        ("big file", "--fsize 1m", "open('big', 'wb').write(b'x' * 10_000_000)", "failed", "OSError"),
        (
            "ptrace",
            "",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.ptrace(16, 1, 0, 0) != 0:\n    raise OSError(ctypes.get_errno(), 'ptrace refused')",
            "failed",
            "PermissionError",
        ),
        (
            "new namespace",
            "",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.unshare(0x10000000) != 0:\n    raise OSError(ctypes.get_errno(), 'unshare refused')",
            "failed",
            "PermissionError",
        ),
        (
            "remount shm",
            "",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "if libc.mount(b'jx', b'/dev/shm', b'tmpfs', 32, b'size=1g') != 0 "
            "and libc.umount2(b'/dev/shm', 2) != 0:\n"
            "    raise OSError(ctypes.get_errno(), 'mount and umount refused')",
            "failed",
            "PermissionError",
        ),
    ],
)
def test_hostile_cell_is_contained(kernel, name, options, code, status, ename):
    if name == "spin":  # the baseline: a cell that ends by itself when the 2 s timeout would strike
        base = kernel.seconds(f"{SECCOMP} --timeout 60\nimport time\ntime.sleep(2)")
    elapsed = kernel.fails_as(f"{SECCOMP} {options}\n{code}", ename, status, name)
    if name == "spin":  # killed at its timeout: at most a second later than that cell ended
        assert elapsed < base + 1.0, (elapsed, base)
    assert kernel.run("print('alive')", check=True).stdout == "alive\n"
    kernel.assert_no_run_processes()


@pytest.mark.parametrize("options", ["", "--network"])
def test_the_third_wave_is_refused_with_network_or_without(kernel, options):
    """modify_ldt, and sockets to the hypervisor (vsock), the kernel's crypto (AF_ALG) and the
    firewall (netfilter netlink): refused, even where the run may use the network."""
    cell = kernel.run(f"{SECCOMP} {options}\n{hostile_calls.cell(hostile_calls.THIRD_WAVE)}", check=True)
    refused = eval(cell.result_text)
    assert refused.pop("modify_ldt") == "EPERM"
    assert refused == dict.fromkeys(refused, "EACCES"), refused  # as every socket the sandbox refuses


def test_cpus_halves_the_cpu_rate_where_a_cgroup_keeps_it_else_is_refused(kernel):
    """As root here (cgroup v1) the run's cgroup keeps --cpus (cgroup v2: test_cgroup_v2.py); an
    ordinary user on cgroup v1 has no cgroup for it, and is told so in one line."""
    if kernel.offers("--cpus: the run's cgroup"):
        cpu_rate.assert_halved(
            lambda options: float(kernel.run(f"{SECCOMP} {options}\n{cpu_rate.SPIN}", check=True).result_text)
        )
        return
    refusal = kernel.refused(f"{SECCOMP} --cpus 0.5\nprint('ran')")
    assert "--cpus cannot be enforced here: it needs a per-run cgroup" in refusal, refusal


def test_printed_fake_frame_cannot_forge_result(kernel):
    fake = '{"t":"result","value":{"data":"forged"},"outputs":{"x":"forged"},"error":null}'
    cell = kernel.run(
        f"{SECCOMP} --out x\nimport sys\nprint({fake!r})\nprint({fake!r}, file=sys.stderr)\nx = 'real'\n'real'",
        check=True,
    )
    assert cell.result_text == "'real'"
    assert kernel.eval("x") == "real"
    assert fake in cell.stdout


def test_unsafe_result_needs_trust(kernel):
    evil = (
        "class Evil:\n    def __reduce__(self):\n        import os\n"
        "        return (os.system, ('touch /tmp/jx-pwned',))\nx = Evil()"
    )
    cell = kernel.run(f"{SECCOMP} --out x\n{evil}")
    assert cell.error["ename"] == "TransferError" and "--trust" in cell.error["evalue"]
    assert kernel.last_run()["status"] == "failed"
    assert not Path("/tmp/jx-pwned").exists()


def test_trust_brings_back_pickles(kernel):
    cell = kernel.run(f"{SECCOMP} --trust --out when\nimport datetime\nwhen = datetime.date(2024, 1, 2)", check=True)
    assert cell.error is None
    assert kernel.eval("when.isoformat()") == "2024-01-02"


def test_inputs_go_in(kernel):
    kernel.run("base = [1, 2, 3]\nsquare = lambda v: v * v", check=True)
    cell = kernel.run(f"{SECCOMP} --in base,square\n[square(v) for v in base]", check=True)
    assert cell.result_text == "[1, 4, 9]"


def test_files_outside_the_sandbox_are_invisible(kernel, notebook_dir):
    secret = Path.home() / f".jx-test-secret-{uuid.uuid4().hex}"
    secret.write_text("home secret")
    local = notebook_dir / "data.txt"
    local.write_text("notebook data")
    hidden = ("PermissionError", "FileNotFoundError")  # Landlock, or not there at all (/tmp of the run's own)
    try:
        for path in (secret, local):
            cell = kernel.run(f"{SECCOMP}\nopen({str(path)!r}).read()")
            assert cell.error["ename"] in hidden, path
            cell = kernel.run(f"{SECCOMP}\nopen({str(path.parent / 'written')!r}, 'w').write('x')")
            assert cell.error["ename"] in hidden, path
        cell = kernel.run(f"{SECCOMP} --mount data.txt\nopen({str(local)!r}).read()", check=True)
        assert cell.result_text == "'notebook data'"
        cell = kernel.run(f"{SECCOMP} --mount data.txt\nopen({str(local)!r}, 'a').write('x')")
        assert cell.error["ename"] == "PermissionError"  # read-only unless :rw
        kernel.run(f"{SECCOMP} --mount data.txt:rw\nopen({str(local)!r}, 'a').write('!')", check=True)
        assert local.read_text() == "notebook data!"
    finally:
        secret.unlink()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--mem lots", "--mem: cannot read 'lots' as a size"),
        ("--timeout -3", "--timeout"),
        ("--cpus zero", "--cpus: expected a number"),
        ("--env NOEQUALS", "--env: cannot read 'NOEQUALS'"),
        ("--backend nope", "no such backend"),
        ("--out 1x", "--out: '1x' is not a variable name"),
        ("--mount /does/not/exist", "does not exist"),
        ("--shm lots", "--shm: cannot read 'lots' as a size; write it like 512m"),
        ("--shm 0", "--shm: a size must be positive"),
        ("--in undefined_variable", "no variable 'undefined_variable'"),
        ("--frobnicate", "unrecognized arguments"),
        ("--name 'unclosed", "unbalanced quotes in the options"),
    ],
)
def test_bad_options_are_one_line_errors_and_nothing_runs(kernel, line, message):
    assert message in kernel.refused(f"%%sandbox {line}\nprint('ran')")


def test_quoted_option_values_lose_their_quotes(kernel):
    """As in a shell: IPython's own parse_argstring would keep them (a pattern '*.csv' matching nothing)."""
    cell = kernel.run(
        f"{SECCOMP} --name 'two words' --env \"GREETING=hi there\"\n__import__('os').environ['GREETING']", check=True
    )
    assert cell.result_text == "'hi there'" and kernel.last_run()["name"] == "two words"


def test_jx_commands(kernel):
    kernel.run(f"{SECCOMP} --name listed\nprint('in the log')", check=True)
    run_id = kernel.last_run()["id"]
    runs = kernel.run(
        f"df = %jx runs\nprint(df.loc[{run_id}, 'status'], df.loc[{run_id}, 'name'], df.loc[{run_id}, 'backend'])",
        check=True,
    )
    assert runs.stdout == "succeeded listed seccomp\n"
    assert kernel.run(f"%jx logs {run_id}", check=True).stdout.startswith(
        f"in the log\n[jupyter-exec] run {run_id} succeeded after "
    )
    shown = kernel.run(f"%jx show {run_id}", check=True).stdout
    assert '"status": "succeeded"' in shown and '"isolation": "seccomp"' in shown
    doctor = kernel.run("%jx doctor", check=True).stdout
    assert "ok   seccomp" in doctor and "%%sandbox uses:" in doctor
    assert kernel.run("%jx logs").stderr.startswith("UsageError: %jx logs needs a run id")


def test_every_run_is_finished_in_the_store(kernel):
    rows = kernel.records().runs(limit=10_000)
    assert rows and all(r["status"] in FINAL for r in rows)
