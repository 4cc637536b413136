"""The one command behind every published figure: runs the benchmarks, keeps their rows in
``benchmarks/results.json`` and renders the tables of docs/speed.md and README.md from them.

    bash scripts/bench                       # everything (32 min on 2 cores at load 10-28; less when quiet)
    bash scripts/bench --quick               # a smoke run: prints the tables, writes nothing
    bash scripts/bench --only seccomp ray    # those jobs again; the other rows are kept
    bash scripts/bench --render              # the tables again from results.json, nothing run
    bash scripts/bench --list                # the jobs

Each job is one benchmark script in a process of its own (as root, or as the ordinary account
through ``scripts/as-user``), whose rows come back as JSON; each row is stamped with the commit
and the date here, and carries the load average its script saw. A job that fails leaves its
earlier rows, with their own commit and date, in place.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import speed_tables as tables
from speed_rows import MARK, Row

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("process", "docker", "gvisor", "ray", "broker")  # bench_backends.py's, as root
RESULTS = ROOT / "benchmarks" / "results.json"
TABLES = ("cells", "back-to-back", "map", "backends", "parts")
DOCS = {ROOT / "docs" / "speed.md": TABLES, ROOT / "README.md": ("glance",)}
# README's "Speed at a glance": each warm or cached figure with its pool-off or uncached twin below it.
GLANCE = (
    ("seccomp.warm@root", "`%%sandbox --backend seccomp`, pool warm"),
    ("seccomp.cold@root", "the same, pool off"),
    ("container.docker.warm@root", "`%%sandbox --backend container`, pool warm (Docker)"),
    ("container.docker.cold@root", "the same, pool off"),
    ("container.runsc.warm@root", "`%%sandbox --runtime runsc`, pool warm (gVisor)"),
    ("container.runsc.cold@root", "the same, pool off"),
    ("container.podman.warm@jx-user", "`%%sandbox`, pool warm, rootless Podman as a user"),
    ("container.podman.cold@jx-user", "the same, pool off"),
    ("cache.hit@root", "`%%sandbox --cache`, a hit"),
    ("cache.run@root", "the same cell, not cached"),
    ("broker.unix@root", "a warm container cell through the broker on a Unix socket"),
    ("broker.hub@root", "the same through the broker as a JupyterHub service"),
    ("ray.cell@root", "`%%rayrun` trivial cell"),
    ("ray.map@root", '`jupyter_exec.map(..., backend="ray")`, 1,000 items'),
    ("map.seccomp@root", '`jupyter_exec.map(..., backend="seccomp")`, 1,000 items'),
    ("back-to-back.seccomp@root", "200 seccomp cells back to back"),
    ("back-to-back.container@root", "40 container cells back to back"),
)


@dataclass(frozen=True)
class Job:
    """One benchmark script run once: as whom, with which arguments."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    as_user: bool = False
    no_namespaces: bool = False

    def command(self, quick: bool) -> list[str]:
        tail = [f"benchmarks/{self.script}", *self.args, "--json", *(["--quick"] if quick else [])]
        if not self.as_user:
            return [sys.executable, *tail]
        wrapper = ["tests/no_namespaces.py", "python"] if self.no_namespaces else []
        return ["bash", "scripts/as-user", "python", *wrapper, *tail]


JOBS = (
    Job("seccomp", "bench_seccomp.py"),
    Job("seccomp-user", "bench_seccomp.py", as_user=True),
    Job("seccomp-no-namespaces", "bench_seccomp.py", as_user=True, no_namespaces=True),
    Job("docker", "bench_container.py"),
    Job("gvisor", "bench_container.py", ("--runtime", "runsc")),
    Job("podman", "bench_container.py", as_user=True),
    Job("cache", "bench_cache.py"),
    Job("broker", "bench_broker.py"),
    Job("ray", "bench_ray.py"),
    Job("map", "bench_map.py"),
    Job("back-to-back", "bench_back_to_back.py"),
    Job("back-to-back-user", "bench_back_to_back.py", ("--backend", "seccomp"), as_user=True),
    Job("back-to-back-no-namespaces", "bench_back_to_back.py", ("--backend", "seccomp"), True, True),
    # a process each: one backend that fails to start (Ray on a very busy machine) costs only its row
    *(Job(f"backends-{name}", "bench_backends.py", ("--backend", name)) for name in BACKENDS),
    Job("backends-podman", "bench_backends.py", ("--backend", "podman"), as_user=True),
    Job("envs", "bench_envs.py"),
    Job("keeper", "bench_keeper.py"),
    Job("keeper-podman", "bench_keeper.py", as_user=True),
    Job("store", "bench_store.py"),
)


def run(job: Job, quick: bool) -> list[Row] | None:
    """The rows of one job, or None (said why) when it failed."""
    command = job.command(quick)
    print(f"\n==> {job.name}: {' '.join(command)}", flush=True)
    began = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    rows: list[Row] | None = None
    for line in child.stdout:
        if line.startswith(MARK):
            rows = json.loads(line[len(MARK) :])
        else:
            print(line, end="", flush=True)
    took = time.monotonic() - began
    if child.wait() != 0 or rows is None:
        print(f"==> {job.name} failed (exit {child.returncode}) after {took:.0f} s; its earlier rows kept", flush=True)
        return None
    print(f"==> {job.name}: {len(rows)} rows in {took:.0f} s", flush=True)
    stamp = {"commit": commit(), "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")}
    return [{**row, **stamp, "job": job.name} for row in rows]


def commit() -> str:
    """The commit measured: HEAD, with ``+changes`` when tracked code differs from it (the
    generated files aside)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in generated())],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


def generated() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in (RESULTS, *DOCS)]


def merge(old: list[Row], new: list[Row], jobs: Sequence[Job]) -> list[Row]:
    """The rows in the jobs' order: a job run now replaces all of its rows, the others keep theirs."""
    ran = {row["job"] for row in new}
    kept = [row for row in old if row.get("job") not in ran]
    order = {job.name: index for index, job in enumerate(jobs)}
    return sorted([*kept, *new], key=lambda row: order.get(row.get("job", ""), len(order)))


def regions(rows: list[Row]) -> dict[str, str]:
    """Every generated region's Markdown, by region name."""
    bodies = {name: tables.table(row for row in rows if row["table"] == name) for name in TABLES}
    bodies["glance"] = tables.glance({row["id"]: row for row in rows}, GLANCE)
    return bodies


def render(rows: list[Row]) -> None:
    """Fill the regions of docs/speed.md and README.md."""
    bodies = regions(rows)
    for path, names in DOCS.items():
        text = path.read_text()
        for name in names:
            text = tables.fill(text, name, bodies[name])
        path.write_text(text)
        print(f"rendered {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few rounds each; print the tables, write nothing")
    parser.add_argument("--only", nargs="+", metavar="JOB", help="run only these jobs (see --list)")
    parser.add_argument("--render", action="store_true", help="render the tables from results.json; run nothing")
    parser.add_argument("--list", action="store_true", help="list the jobs")
    args = parser.parse_args()
    if args.list:
        for job in JOBS:
            print(f"{job.name:28} {' '.join(job.command(False)[1:])}")
        return
    unknown = set(args.only or ()) - {job.name for job in JOBS}
    if unknown:
        raise SystemExit(f"no job {sorted(unknown)[0]!r}: see --list")
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if args.render:
        render(old)
        return
    jobs = [job for job in JOBS if not args.only or job.name in args.only]
    if os.getuid() != 0 and any(job.as_user for job in jobs):
        print("not root: the ordinary account's jobs are left out", flush=True)
        jobs = [job for job in jobs if not job.as_user]
    new: list[Row] = []
    for job in jobs:
        new.extend(run(job, args.quick) or [])
        if not args.quick:  # kept as it goes: an interrupted run loses only the job it was in
            RESULTS.write_text(json.dumps(merge(old, new, JOBS), indent=1) + "\n")
    if args.quick:
        for name, body in regions(new).items():
            print(f"\n<!-- bench:{name} -->\n{body}")
        return
    render(merge(old, new, JOBS))


if __name__ == "__main__":
    main()
