"""The broker's policy file, its fair queue, its rate limit and its request checks, on their own
(no engine, no socket): what an administrator writes and what a hand-made request can send."""

from __future__ import annotations

import json

import pytest

from jupyter_exec.backends.broker.wire import BrokerError, parse_run
from jupyter_exec.broker.audit import AuditLog
from jupyter_exec.broker.quotas import RateLimiter, Scheduler, Ticket
from jupyter_exec.broker.rules import Capacity, Quotas, parse_rules
from jupyter_exec.errors import PolicyError

RULES = {
    "memory": "2g",
    "gpus": 0,
    "quotas": {"runs": 2},
    "groups": {"students": {"runtime": "runsc", "memory": "1g"}, "staff": {"gpus": 2, "quotas": {"runs": 4}}},
    "users": {"alice": {"memory": "8g"}},
}


def test_sections_override_in_order_and_the_users_own_comes_last():
    rules = parse_rules(RULES, "broker.yaml")
    nobody, quotas = rules.for_user("carol", ())
    assert nobody.ceilings["memory"].value == 2 << 30 and quotas.runs == 2 and "runtime" not in nobody.forced
    student, _ = rules.for_user("dave", ("students",))
    assert student.ceilings["memory"].value == 1 << 30 and student.forced["runtime"].value == "runsc"
    staff, staff_quotas = rules.for_user("erin", ("staff",))
    assert staff.ceilings["gpus"].value == 2 and staff_quotas.runs == 4
    alice, _ = rules.for_user("alice", ("students",))
    assert alice.ceilings["memory"].value == 8 << 30 and alice.forced["runtime"].value == "runsc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quotas": {"runz": 2}}, "unknown key 'runz'"),
        ({"quotas": {"when_full": "drop"}}, "expected queue or refuse"),
        ({"groups": {"staff": {"memry": "2g"}}}, "memry"),
        ({"users": ["alice"]}, "groups and users are sections by name"),
    ],
)
def test_a_mistake_in_the_file_is_refused_with_the_key(data, message):
    with pytest.raises(PolicyError, match=message) as refused:
        parse_rules(data, "broker.yaml")
    assert "broker.yaml" in str(refused.value)


def _ticket(user: str, quotas: Quotas, memory: int = 0) -> Ticket:
    return Ticket(user, memory, 0, quotas)


def test_room_goes_first_to_the_user_with_the_fewest_runs_going():
    scheduler = Scheduler(Capacity(runs=2))
    quotas = Quotas(runs=5)
    first, second = _ticket("a", quotas), _ticket("a", quotas)
    assert scheduler.enter(first) is None and scheduler.enter(second) is None
    a_waits, b_waits = _ticket("a", quotas), _ticket("b", quotas)
    assert scheduler.enter(a_waits) == "the machine is full (2 runs going)"
    assert scheduler.enter(b_waits) is not None
    scheduler.leave(first)
    assert b_waits.granted.is_set() and not a_waits.granted.is_set()  # b had none going, a had one
    assert scheduler.usage("a") == {"runs": 1, "memory": 0, "gpus": 0, "waiting": 1}
    assert scheduler.withdraw(a_waits) and scheduler.usage("a")["waiting"] == 0


def test_a_run_that_cannot_start_is_refused_when_so_configured_or_never_fits():
    scheduler = Scheduler(Capacity())
    refuse = Quotas(runs=1, memory=1 << 30, when_full="refuse")
    assert scheduler.enter(_ticket("a", refuse)) is None
    with pytest.raises(BrokerError, match="you have 1 runs going") as full:
        scheduler.enter(_ticket("a", refuse))
    assert full.value.status == 429
    with pytest.raises(BrokerError, match="more than your whole memory quota") as never:
        scheduler.enter(_ticket("b", refuse, memory=2 << 30))
    assert never.value.status == 403


def test_a_burst_beyond_the_rate_is_refused_for_that_user_only():
    limiter = RateLimiter()
    for _ in range(6):  # 60 a minute: bursts of 6
        limiter.take("a", 60)
    with pytest.raises(BrokerError, match="at most 60 a minute") as refused:
        limiter.take("a", 60)
    assert refused.value.status == 429
    limiter.take("b", 60)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"code": 1}, "code: expected the cell's text"),
        ({"code": "1", "limits": {"memory": -1}}, "limits.memory: a size must be positive, got -1"),
        ({"code": "1", "limits": {"root": True}}, "limits: unknown limit"),
        ({"code": "1", "mounts": ["/etc:/x"]}, "mounts: the broker runs cells away from your files"),
        ({"code": "1", "env": {"A": 1}}, "env: expected an object of strings"),
        ({"code": "1", "outputs": ["not a name"]}, "--out"),
    ],
)
def test_a_hand_made_run_request_is_checked_field_by_field(doc, message):
    with pytest.raises(BrokerError, match=message.replace("[", r"\[").replace("]", r"\]")) as refused:
        parse_run(doc, 1000)
    assert refused.value.status == 400


def test_the_audit_log_rotates_by_size_and_keeps_whole_lines(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=300, backups=2)
    for number in range(40):
        log.write(op="hello", user="a", decision="allowed", n=number)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    current = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    older = [json.loads(line) for line in (tmp_path / "audit.jsonl.1").read_text().splitlines()]
    assert current[-1]["n"] == 39 and older[-1]["n"] == current[0]["n"] - 1
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
