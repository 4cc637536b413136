"""The warm pool's size follows the rate of takes (``container.demand``): on a clock of our
own, then with cells back to back on the real engine, under the policy's cap."""

from __future__ import annotations

import pytest
from conftest import require

from jupyter_exec.backends.container import ContainerBackend
from jupyter_exec.backends.container.demand import Demand
from jupyter_exec.config import ExecConfig
from jupyter_exec.manager import Manager
from jupyter_exec.policy import load_policy
from jupyter_exec.spec import RunSpec


class Clock:
    """A ``Demand`` of 1 to 6 containers, made in 300 ms, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.demand = Demand(1, 6, clock=lambda: self.now)
        self.demand.made(0.3)

    def takes(self, count: int, every: float, waited: float = 0.0) -> int:
        """``count`` cells, one every ``every`` seconds of their own, each having waited
        ``waited`` for its container; what the demand wants then."""
        for _ in range(count):
            self.now += waited
            self.demand.took(waited=waited)
            self.now += every
        return self.demand.target()


def test_cells_typed_seconds_apart_keep_the_least():
    assert Clock().takes(5, every=5.0) == 1  # a person typing


def test_cells_back_to_back_want_what_is_used_up_while_one_is_made():
    clock = Clock()
    assert clock.takes(8, every=0.1) == 3  # a cell every 100 ms, a container in 300 ms: three on their way
    assert clock.takes(8, every=0.01) == 6  # faster than that: the cap
    clock.now += 31  # quiet: back to the least
    assert clock.demand.target() == 1


def test_time_spent_waiting_for_a_container_is_not_the_cells_pace():
    """Cells of 50 ms that each wait 300 ms for their container are cells every 50 ms."""
    assert Clock().takes(8, every=0.05, waited=0.3) == 6


def test_the_cap_is_never_below_the_least():
    assert Demand(2, 0).target() == 2 and Demand(2, 0).most == 2


def _most_warm_while_cells_follow_each_other(tmp_path, policy_text: str | None) -> int:
    """Run twelve trivial container cells back to back through a Manager on the real engine;
    the most containers its pool held warm or was making meanwhile."""
    availability = ContainerBackend.availability()
    require(availability.ok, f"container backend: {availability.reason} — {availability.fix}")
    manager = Manager(ExecConfig(data_dir=str(tmp_path / "data"), pool_size=1))
    if policy_text is not None:
        (tmp_path / "policy.yaml").write_text(policy_text)
        manager.policy = load_policy((), {"JX_POLICY": str(tmp_path / "policy.yaml")})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JX_CONTAINER_POOL_MAX", "3")
        backend = manager.backend("container")
    try:
        most = 0
        for n in range(12):
            result = manager.run(f"x = {n}", RunSpec(backend="container", outputs=("x",)))
            assert result.outputs == {"x": n}
            most = max(most, backend.pool.ahead_count())
        return most
    finally:
        manager.shutdown()
        assert backend.pool.idle_count() == 0


def test_cells_back_to_back_find_containers_made_ahead(tmp_path):
    assert _most_warm_while_cells_follow_each_other(tmp_path, None) >= 2


def test_the_policy_caps_containers_made_ahead(tmp_path):
    assert _most_warm_while_cells_follow_each_other(tmp_path, "warm_containers: 1\n") <= 1
