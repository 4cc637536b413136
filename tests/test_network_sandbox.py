"""``%%sandbox --network HOST,...`` as a notebook user sees it, against the lab's servers
(``network_lab``): what a cell reaches, what it is refused, and the run's record of it."""

from __future__ import annotations

import os
from pathlib import Path

import pip
import pytest
from conftest import NO_NAMESPACES, Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.ordinary_user]

# The sandboxes a host list runs in, as the options that pick them: as root, the process
# sandbox, Docker and gVisor; as an ordinary user, the process sandbox and rootless Podman
# (what `auto` picks there). Where no namespace can be made, none: the list is refused.
BACKENDS = {"seccomp": "--backend seccomp"}
BACKENDS.update(
    {"docker": "--backend container", "gvisor": "--backend container --runtime runsc"}
    if os.geteuid() == 0
    else {"podman": "--backend container"}
)
needs_namespaces = pytest.mark.skipif(NO_NAMESPACES, reason="no namespaces: a host list is refused (tested below)")

FETCH = """
import urllib.request
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=20).read().decode()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
"""


def _pip(sandbox: str) -> tuple[str, str]:
    """How a cell in ``sandbox`` runs pip: its Python's own, or (the base image has none) this one's,
    mounted; and the options that mount it."""
    if sandbox == "seccomp":
        return "sys.executable", ""
    return "'python3'", f"--mount {Path(pip.__file__).parent}:/opt/pip/pip --env PYTHONPATH=/opt/pip"


@pytest.fixture(scope="module")
def lab_kernel(network_lab, tmp_path_factory):
    kernel = Kernel(tmp_path_factory.mktemp("net-data"), tmp_path_factory.mktemp("net-nb"), env=network_lab.env())
    yield kernel
    kernel.shutdown_leaving_nothing()


@needs_namespaces
@pytest.mark.parametrize("sandbox", BACKENDS)
def test_listed_hosts_are_reached_and_others_refused_by_name(lab_kernel, network_lab, sandbox):
    ca = network_lab.ca
    cell = lab_kernel.run(
        f"%%sandbox {BACKENDS[sandbox]} --network files.test,meta.test --mount {ca.parent} "
        f"--env SSL_CERT_FILE={ca}\n{FETCH}"
        "print(fetch('http://files.test/index.txt'), end='')\n"
        "print(fetch('https://files.test/index.txt'), end='')\n"
        "print(fetch('http://other.test/index.txt'))\n"
        f"print(fetch('http://{network_lab.addresses['files.test']}/index.txt'))\n"
        "print(fetch('http://meta.test/latest/'))\n",
        check=True,
    )
    lines = cell.stdout.splitlines()
    assert lines[:2] == ["hello from the lab", "hello from the lab"]
    refused = "HTTPError: HTTP Error 403: other.test:80 is not on this run's --network list (files.test,meta.test)"
    assert lines[2] == refused
    assert "is not on this run's --network list" in lines[3]
    assert lines[4].startswith("HTTPError: HTTP Error 403: meta.test is 169.254.169.254, a link-local address")
    run_id = lab_kernel.last_run()["id"]
    shown = lab_kernel.shown(run_id)
    verdicts = [(c["host"], c["port"], c["allowed"]) for c in shown["connections"]]
    assert verdicts == [
        ("files.test", 80, True),
        ("files.test", 443, True),
        ("other.test", 80, False),
        (network_lab.addresses["files.test"], 80, False),
        ("meta.test", 80, False),
    ]
    assert all(c["sent"] > 0 and c["received"] > 0 for c in shown["connections"][:2])
    assert "is not on this run's --network list" in shown["connections"][2]["reason"]
    summary = shown["details"]["network"]
    assert summary["hosts"] == "files.test,meta.test" and summary["connections"] == 5 and summary["refused"] == 3
    assert summary["refused_to"] == ["other.test:80", f"{network_lab.addresses['files.test']}:80", "meta.test:80"]
    refused = lab_kernel.run(f"runs = %jx runs\nprint(runs.loc[{run_id}, 'refused'])", check=True)
    assert refused.stdout == "3\n"


@needs_namespaces
@pytest.mark.parametrize("sandbox", BACKENDS)
def test_no_dns_no_udp_no_direct_connection(lab_kernel, network_lab, sandbox):
    address = network_lab.addresses["files.test"]
    cell = lab_kernel.run(
        f"%%sandbox {BACKENDS[sandbox]} --network files.test\n"
        "import socket\n"
        "def attempt(what, call):\n"
        "    try:\n"
        "        call(); print(what, 'worked')\n"
        "    except OSError as error:\n"
        "        print(what, 'refused')\n"
        "attempt('dns', lambda: socket.getaddrinfo('files.test', 80))\n"
        f"attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{address}', 53)))\n"
        "attempt('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))\n"
        f"attempt('direct', lambda: socket.create_connection(('{address}', 80), timeout=5))\n",
        check=True,
    )
    assert cell.stdout.split("\n")[:4] == ["dns refused", "udp refused", "raw refused", "direct refused"]


@needs_namespaces
@pytest.mark.parametrize("sandbox", BACKENDS)
def test_pip_installs_from_an_index_on_the_list_and_names_one_that_is_not(lab_kernel, network_lab, sandbox):
    python, pip_options = _pip(sandbox)
    pip = (
        "import subprocess, sys\n"
        f"done = subprocess.run([{python}, '-m', 'pip', 'install', '--no-cache-dir',"
        " '--disable-pip-version-check', '--retries', '1', '--timeout', '10', '--target', 'pkgs', '--index-url', 'https://files.test/simple/',"
        f" '--cert', '{network_lab.ca}', 'jxlabpkg'], capture_output=True, text=True)\n"
        "sys.path.insert(0, 'pkgs')\n"
    )
    options = f"{BACKENDS[sandbox]} {pip_options} --timeout 2m --mount {network_lab.ca.parent}"
    cell = lab_kernel.run(
        f"%%sandbox {options} --network files.test\n{pip}import jxlabpkg; print(jxlabpkg.GREETING)",
        timeout=180,
        check=True,
    )
    assert cell.stdout == "installed from the lab\n"
    cell = lab_kernel.run(
        f"%%sandbox {options} --network other.test\n{pip}print(done.returncode, done.stdout, done.stderr)",
        timeout=180,
        check=True,
    )
    assert cell.stdout.startswith("1 ")
    assert "files.test:443 is not on this run's --network list (other.test)" in cell.stdout


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--network 10.0.0.0/8", "--network: '10.0.0.0/8' is an address range; ranges are not allowed"),
        ("--network files.test:99999", "--network: 'files.test:99999': the port must be a number from 1 to 65535"),
        ("--network 'bad name'", "--network: 'bad name' is not a host name"),
        ("--backend local --network files.test", "--network cannot be enforced here: a host list needs a sandbox"),
    ],
)
def test_bad_lists_are_one_line_errors_and_nothing_runs(kernel, line, message):
    assert message in kernel.refused(f"%%sandbox {line}\nprint('ran')")


@pytest.mark.skipif(not NO_NAMESPACES, reason="only where no namespace can be made")
def test_without_namespaces_a_host_list_is_refused_in_one_line(kernel):
    refused = kernel.refused("%%sandbox --backend seccomp --network files.test\nprint('ran')")
    assert "--network cannot be enforced here: a host list needs a network namespace of the run's own" in refused


@needs_namespaces
@pytest.mark.parametrize("sandbox", BACKENDS)
def test_a_flood_of_connections_is_bounded_and_the_kernel_unharmed(lab_kernel, sandbox):
    cell = lab_kernel.run(
        f"%%sandbox {BACKENDS[sandbox]} --network other.test:7000 --timeout 2m\n"
        "import os, socket\n"
        "port = int(os.environ['HTTP_PROXY'].rsplit(':', 1)[1])\n"
        "held = [socket.create_connection(('127.0.0.1', port)) for _ in range(300)]\n"
        "for sock in held:\n"
        "    sock.sendall(b'CONNECT other.test:7000 HTTP/1.1\\r\\n\\r\\n')\n"
        "answers = [sock.recv(12) for sock in held]\n"
        "print(answers.count(b'HTTP/1.1 200'), answers.count(b'HTTP/1.1 503'))",
        timeout=180,
        check=True,
    )
    assert cell.stdout == "64 236\n"
    assert lab_kernel.run("1 + 1", timeout=10, check=True).result_text == "2"


@needs_namespaces
@pytest.mark.parametrize("sandbox", [s for s in BACKENDS if s != "gvisor"])
def test_a_session_reaches_its_host_list_for_its_life_each_cells_connections_on_its_record(
    lab_kernel, network_lab, sandbox
):
    """The list is the session's (set by its first cell, another refused); each cell's record has
    its own connections; the gate ends with the session."""
    name = f"net-{sandbox}"
    options = f"%%sandbox {BACKENDS[sandbox]} --session {name}"
    try:
        files = "print(fetch('http://files.test/index.txt'), end='')"
        first = lab_kernel.run(f"{options} --network files.test\n{FETCH}{files}")
        assert first.error is None and first.stdout == "hello from the lab\n", first
        firsts = lab_kernel.last_run()["id"]
        later = lab_kernel.run(
            f"{options}\nprint(fetch('http://other.test/index.txt'))\n{files}",
            check=True,
        )
        assert later.stdout.splitlines() == [
            "HTTPError: HTTP Error 403: other.test:80 is not on this run's --network list (files.test)",
            "hello from the lab",
        ]
        laters = lab_kernel.last_run()["id"]
        for run_id, expected in (
            (firsts, [("files.test", 80, True)]),
            (laters, [("other.test", 80, False), ("files.test", 80, True)]),
        ):
            shown = lab_kernel.shown(run_id)
            assert [(c["host"], c["port"], c["allowed"]) for c in shown["connections"]] == expected, shown
        refusal = lab_kernel.refused(f"{options} --network other.test\nprint('ran')")
        assert refusal.startswith(f"--network: session {name} runs with --network files.test"), refusal
        if sandbox == "seccomp":
            fork = lab_kernel.run(f"%jx fork {name} {name}-b")
            assert fork.stderr == (
                f"UsageError: session {name} reaches a host list (--network files.test), and a fork cannot "
                "take its network relay yet; fork a session without a host list, or run its cells again in a new one\n"
            ), fork
    finally:
        lab_kernel.run(f"%jx end {name}")
    gates = list(Path(lab_kernel.data_dir).rglob("proxy.sock"))
    assert not gates, gates
