"""``--network HOST,...`` through a broker whose policy lists the hosts each user may name: the
proxy runs at the broker (it holds the engine), and the broker admits every list again under
the user's own section of its file."""

from __future__ import annotations

import pytest
from test_broker import SANDBOX, USERS, Broker, UserKernel, _can_run_brokers

from jupyter_exec.store.connections import RunConnections

pytestmark = pytest.mark.kernel

POLICY = f"""\
network: [files.test]
users:
  {USERS[1]}: {{network: [files.test, other.test]}}
"""
FETCH = "import urllib.request\nprint(urllib.request.urlopen('http://{}/index.txt').read().decode(), end='')"


class ListedBroker(Broker):
    """A broker whose file is ``POLICY``."""

    def start(self) -> None:
        self.policy.write_text(POLICY)
        super().start()


@pytest.fixture(scope="module")
def listed_broker(network_lab):
    _can_run_brokers()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in network_lab.env().items():  # the broker's proxy resolves the lab's names
            patch.setenv(key, value)
        broker = ListedBroker()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def users(listed_broker):
    kernels = [UserKernel(user, {"JX_BROKER": listed_broker.address}) for user in USERS]
    yield kernels
    for kernel in kernels:
        kernel.shutdown()


def test_each_user_reaches_the_hosts_their_section_lists(users, listed_broker):
    alice, bob = users
    assert alice.run(f"{SANDBOX} --network files.test\n{FETCH.format('files.test')}", check=True).stdout == (
        "hello from the lab\n"
    )
    run_id = alice.last_run()["id"]
    refused = alice.run(f"{SANDBOX} --network other.test\n{FETCH.format('other.test')}")
    assert refused.stderr == (
        "UsageError: --network other.test: not among the hosts the administrator's policy allows "
        f"(policy {listed_broker.policy}): files.test\n"
    )
    (kept,) = alice.shown(run_id)["connections"]
    assert (kept["host"], kept["port"], kept["allowed"]) == ("files.test", 80, True) and kept["received"] > 0
    at_broker = RunConnections(listed_broker.data / "broker.sqlite3")
    assert [c["host"] for run in range(1, 5) for c in at_broker.of(run)] == ["files.test"]
    alone = alice.run(f"{SANDBOX} --network\nprint('ran')")
    assert alone.stderr.startswith("UsageError: --network alone (every host) is not allowed")
    assert bob.run(f"{SANDBOX} --network other.test\n{FETCH.format('other.test')}", check=True).stdout == (
        "hello from the lab\n"
    )
