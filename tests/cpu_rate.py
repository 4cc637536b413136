"""``--cpus`` measured: the CPU rate a CPU-bound cell gets under ``--cpus 0.5`` against the rate
the same cell gets without it, in the same test, so the machine's load does not decide it.

A rate is CPU seconds per second: the median of one-second slices (a worker or container being
made ready beside the cell takes a moment of CPU from one slice or two). The cell measures
itself (``SPIN``) where its own clock is the host's; under gVisor the test reads the
container's cgroup from the host (``cgroup_cpu_seconds``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

SLICES = 6
BUSY = 0.8  # a CPU rate without the quota under this: too busy a machine to tell a quota of 0.5 from 1
#: A cell that spins ``SLICES`` one-second slices; its value: the median CPU rate of a slice.
SPIN = (
    "import statistics, time\nrates = []\n"
    f"for _ in range({SLICES}):\n"
    "    start, used = time.monotonic(), time.process_time()\n"
    "    while time.monotonic() - start < 1:\n        pass\n"
    "    rates.append((time.process_time() - used) / (time.monotonic() - start))\n"
    "statistics.median(rates)"
)


def assert_halved(rate: Callable[[str], float], attempts: int = 3, patience: float = 120) -> None:
    """``rate(options)`` (the cell's CPU rate run with ``options``) under ``--cpus 0.5`` is
    0.5 ± 0.15 of the mean of the rates without it just before and just after.

    That tells only where the cell gets most of a CPU without the quota: on a machine so busy
    that it gets half or less, a quota of 0.5 and one of 1 look alike. So a measurement whose
    rate without the quota is under ``BUSY`` does not count: the test measures again, for up to
    ``patience`` seconds, and fails saying the machine was too busy if none counts. Of those
    that count, one of ``attempts`` must be in the range (a load that changes meanwhile); a
    quota that is not half is never in it."""
    seen: list[tuple[float, float, float]] = []
    deadline = time.monotonic() + patience
    while True:
        before = rate("")
        capped = rate("--cpus 0.5")
        after = rate("")
        seen.append((round(before, 3), round(capped, 3), round(after, 3)))
        free = (before + after) / 2
        if free >= BUSY and 0.35 <= capped / free <= 0.65:
            return
        counted = [s for s in seen if (s[0] + s[2]) / 2 >= BUSY]
        if len(counted) >= attempts:
            raise AssertionError(f"--cpus 0.5 did not halve the CPU rate (without, with, without again): {counted}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the machine was too busy to measure --cpus for {patience:g} s: a cell without it got under "
                f"{BUSY} of a CPU (without, with, without again: {seen})"
            )


def cgroup_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by the cgroup of process ``pid`` (v1's cpuacct, else v2's cpu.stat)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            mount = next(p for p in Path("/sys/fs/cgroup").iterdir() if "cpuacct" in p.name.split(","))
            return int((mount / path.lstrip("/") / "cpuacct.usage").read_text()) / 1e9
    unified = next(line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))
    stat = Path("/sys/fs/cgroup", unified[3:].lstrip("/"), "cpu.stat").read_text().split()
    return int(stat[stat.index("usage_usec") + 1]) / 1e6


def host_rate(pid: int) -> float:
    """The median CPU rate of ``pid``'s cgroup over ``SLICES - 1`` one-second slices, from the host."""
    rates = []
    for _ in range(SLICES - 1):
        start, used = time.monotonic(), cgroup_cpu_seconds(pid)
        time.sleep(1)
        rates.append((cgroup_cpu_seconds(pid) - used) / (time.monotonic() - start))
    return statistics.median(rates)
