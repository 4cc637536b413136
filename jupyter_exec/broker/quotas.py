"""Room for runs: each user's quota, the machine's capacity, a fair queue, and a rate limit.

A run asks the ``Scheduler`` for room with a ``Ticket`` (its user, memory and GPUs, and that
user's ``Quotas``). It starts at once when both the user's quota and the machine's capacity
have room; otherwise it waits in its user's queue (or is refused, with ``when_full: refuse``).
When room frees, the next run to start is the head of the queue of the user with the fewest
runs going (the longest waiting among equals): one user's fifty runs wait behind another's
one, instead of in front of it. A run that could never fit (more memory than the user's whole
quota) is refused at once, not queued forever.

``RateLimiter`` keeps each user to ``rate`` requests a minute (a token bucket holding a tenth
of that), so a burst from one user is refused with 429 instead of taking the broker from the
others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from jupyter_exec.backends.broker.wire import BrokerError
from jupyter_exec.units import format_size

from .rules import Capacity, Quotas

__all__ = ["RateLimiter", "Scheduler", "Ticket"]


@dataclass(eq=False)
class Ticket:
    """One run's claim on room."""

    user: str
    memory: int
    gpus: int
    quotas: Quotas
    granted: threading.Event = field(default_factory=threading.Event)
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Held:
    runs: int = 0
    memory: int = 0
    gpus: int = 0

    def add(self, ticket: Ticket, sign: int) -> None:
        self.runs += sign
        self.memory += sign * ticket.memory
        self.gpus += sign * ticket.gpus


class Scheduler:
    """Per-user quotas and the machine's capacity, with a fair queue (see the module docstring)."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._total = _Held()
        self._waiting: dict[str, deque[Ticket]] = {}

    def enter(self, ticket: Ticket) -> str | None:
        """Grant ``ticket`` now (None), or queue it and say why it waits; ``BrokerError`` (429, or 403
        for a run that could never fit) when it must be refused instead."""
        never = self._never(ticket)
        if never:
            raise BrokerError(403, never, "PolicyError")
        with self._lock:
            why = self._why_not(ticket)
            if why is None and not self._waiting.get(ticket.user):
                self._grant(ticket)
                return None
            why = why or "your earlier runs are waiting"
            queued = len(self._waiting.get(ticket.user, ()))
            if ticket.quotas.when_full == "refuse":
                raise BrokerError(429, f"no room now: {why}; run it again when one has ended")
            if queued >= ticket.quotas.queue:
                raise BrokerError(
                    429,
                    f"{queued} of your runs are waiting already (your queue holds {ticket.quotas.queue}); "
                    "wait for them",
                )
            self._waiting.setdefault(ticket.user, deque()).append(ticket)
            return why

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out of the queue (its run was cancelled); False if granted meanwhile."""
        with self._lock:
            if ticket.granted.is_set():
                return False
            queue = self._waiting.get(ticket.user)
            if queue and ticket in queue:
                queue.remove(ticket)
            self._grant_waiting()
            return True

    def leave(self, ticket: Ticket) -> None:
        """A granted ticket's run is over: its room goes to the next waiting run."""
        with self._lock:
            self._held[ticket.user].add(ticket, -1)
            self._total.add(ticket, -1)
            self._grant_waiting()

    def usage(self, user: str) -> dict[str, int]:
        with self._lock:
            held = self._held.get(user, _Held())
            return {
                "runs": held.runs,
                "memory": held.memory,
                "gpus": held.gpus,
                "waiting": len(self._waiting.get(user, ())),
            }

    def _never(self, ticket: Ticket) -> str | None:
        quotas, capacity = ticket.quotas, self.capacity
        asked = format_size(ticket.memory)
        if quotas.memory is not None and ticket.memory > quotas.memory:
            return f"--mem {asked} is more than your whole memory quota ({format_size(quotas.memory)})"
        if capacity.memory is not None and ticket.memory > capacity.memory:
            return f"--mem {asked} is more than this machine gives all runs together ({format_size(capacity.memory)})"
        for most, what in ((quotas.gpus, "your GPU quota"), (capacity.gpus, "this machine's GPUs")):
            if most is not None and ticket.gpus > most:
                return f"--gpus {ticket.gpus} is more than {what} ({most})"
        return None

    def _why_not(self, ticket: Ticket) -> str | None:
        """Why ``ticket`` cannot start now (None: it can). Called with the lock held."""
        held, quotas, capacity, total = self._held.get(ticket.user, _Held()), ticket.quotas, self.capacity, self._total
        if quotas.runs is not None and held.runs + 1 > quotas.runs:
            return f"you have {held.runs} runs going (your quota is {quotas.runs})"
        if quotas.memory is not None and held.memory + ticket.memory > quotas.memory:
            quota = format_size(quotas.memory)
            return f"your running sandboxes hold {format_size(held.memory)} of your memory quota ({quota})"
        if quotas.gpus is not None and held.gpus + ticket.gpus > quotas.gpus:
            return f"your running sandboxes hold {held.gpus} of your {quotas.gpus} GPUs"
        if capacity.runs is not None and total.runs + 1 > capacity.runs:
            return f"the machine is full ({total.runs} runs going)"
        if capacity.memory is not None and total.memory + ticket.memory > capacity.memory:
            return f"the machine is full ({format_size(total.memory)} of {format_size(capacity.memory)} given to runs)"
        if capacity.gpus is not None and total.gpus + ticket.gpus > capacity.gpus:
            return "every GPU is taken"
        return None

    def _grant(self, ticket: Ticket) -> None:
        self._held.setdefault(ticket.user, _Held()).add(ticket, 1)
        self._total.add(ticket, 1)
        ticket.granted.set()

    def _grant_waiting(self) -> None:
        """Start waiting runs while they fit, fewest-running user first. Called with the lock held."""
        while True:
            heads = [q[0] for q in self._waiting.values() if q and self._why_not(q[0]) is None]
            if not heads:
                return
            chosen = min(heads, key=lambda t: (self._held.get(t.user, _Held()).runs, t.since))
            self._waiting[chosen.user].popleft()
            self._grant(chosen)


class RateLimiter:
    """Each user's requests a minute (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, when counted)

    def take(self, user: str, per_minute: int) -> None:
        """Count one request of ``user``; ``BrokerError`` (429) if it is over the rate."""
        burst = max(1.0, per_minute / 10)
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(user, (burst, now))
            tokens = min(burst, tokens + (now - then) * per_minute / 60)
            if tokens < 1:
                self._buckets[user] = (tokens, now)
                raise BrokerError(429, f"too many requests: at most {per_minute} a minute; wait a few seconds")
            self._buckets[user] = (tokens - 1, now)
