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


def test_cells_typed_seconds_apart_keep_the_least():
    now = [0.0]
    demand = Demand(1, 6, clock=lambda: now[0])
    demand.made(0.3)
    for _ in range(5):
        demand.took()
        now[0] += 5.0  # a person typing
    assert demand.target() == 1


def test_cells_back_to_back_want_what_is_used_up_while_one_is_made():
    now = [0.0]
    demand = Demand(1, 6, clock=lambda: now[0])
    demand.made(0.3)
    for _ in range(8):
        demand.took()
        now[0] += 0.1  # a cell every 100 ms, a container in 300 ms: three on their way
    assert demand.target() == 3
    for _ in range(8):
        demand.took()
        now[0] += 0.01  # faster than that: the cap
    assert demand.target() == 6
    now[0] += 31  # quiet: back to the least
    assert demand.target() == 1


def test_time_spent_waiting_for_a_container_is_not_the_cells_pace():
    """Cells of 50 ms that each wait 300 ms for their container are cells every 50 ms."""
    now = [0.0]
    demand = Demand(1, 6, clock=lambda: now[0])
    demand.made(0.3)
    for _ in range(8):
        now[0] += 0.3
        demand.took(waited=0.3)
        now[0] += 0.05
    assert demand.target() == 6


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
