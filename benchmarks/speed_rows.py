"""What a benchmark script hands the generator: rows of figures, each a pair of the same work.

A script prints its rows for a person, and with ``--json`` also as one JSON list on a line of
stdout of its own that starts with ``MARK`` (whatever else writes to stdout, Ray's log lines
say, cannot be mistaken for it) for ``generate.py``, which adds the commit and the date and
renders the tables. A row is a plain dict, so the JSON file the tables are rendered from is
the whole truth:

- ``pair``: ``ours`` against ``twin`` doing the same work (each a summary of a ``Sample``:
  median, p90, p99, n, in ms); ``ratio`` = ours / twin at the median.
- ``rate``: one backend's create-to-first-output (p50/p99) and sustained creations per
  second with as many requesters as cores, ours and the raw tool's.

Every row names who ran it (``root``, ``jx-user``, ``jx-user, no namespaces``): figures that
depend on the user are separate rows.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
from typing import Any

from timing import LoadWatch, Sample

Row = dict[str, Any]
MARK = "jx-bench-rows: "


def options(description: str | None, runs: int, quick_runs: int) -> argparse.ArgumentParser:
    """The options every script takes: ``--runs`` (rounds), ``--quick`` (a smoke run), ``--json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, help=f"rounds (default {runs}; {quick_runs} with --quick)")
    parser.add_argument("--quick", action="store_true", help="a few rounds: does it work, not how fast")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON (for generate.py)")
    parser.set_defaults(default_runs=runs, quick_runs=quick_runs)
    return parser


def rounds(args: argparse.Namespace) -> int:
    """The rounds asked for: ``--runs``, else the script's default (its quick one with ``--quick``)."""
    return int(args.runs or (args.quick_runs if args.quick else args.default_runs))


def who() -> str:
    """Who runs the benchmark, as the rows name it: root, or the account (and whether it has
    namespaces: the process sandbox's figures differ with them)."""
    if os.getuid() == 0:
        return "root"
    from jupyter_exec.backends.process.guarantees import guarantees

    name = pwd.getpwuid(os.getuid()).pw_name
    return name if guarantees(confined=True).namespaces.available else f"{name}, no namespaces"


def pair(table: str, key: str, work: str, ours: tuple[str, Sample], twin: tuple[str, Sample], load: LoadWatch) -> Row:
    """A row of ``table``: ``ours`` and ``twin`` (label, times) doing ``work``, measured interleaved."""
    return {
        "kind": "pair",
        "table": table,
        "id": f"{key}@{who()}",
        "work": work,
        "who": who(),
        "ours": {"label": ours[0], **ours[1].summary()},
        "twin": {"label": twin[0], **twin[1].summary()},
        "ratio": ours[1].median / twin[1].median,
        "load": load.span,
        "cores": os.cpu_count(),
    }


def describe(row: Row) -> str:
    """One line for a person."""
    low, high = row["load"]
    if row["kind"] == "pair":
        ours, twin = row["ours"], row["twin"]
        return (
            f"{row['work']} [{row['who']}]: {ours['label']} {ours['median']:.2f} ms (p90 {ours['p90']:.2f}) vs"
            f" {twin['label']} {twin['median']:.2f} ms (p90 {twin['p90']:.2f}): {row['ratio']:.2f}x"
            f" (load {low:.1f}-{high:.1f})"
        )
    ours, twin = row["ours"], row["twin"]
    return (
        f"{row['work']} [{row['who']}]: first output p50 {ours['p50']:.1f} / p99 {ours['p99']:.1f} ms,"
        f" {ours['per_second']:.1f}/s; {twin['label']}: p50 {twin['p50']:.1f} / p99 {twin['p99']:.1f} ms,"
        f" {twin['per_second']:.1f}/s (load {low:.1f}-{high:.1f})"
    )


def report(rows: list[Row], args: argparse.Namespace) -> None:
    """Each row as a line for a person; with ``--json`` all of them on one line after ``MARK``."""
    for row in rows:
        print(describe(row), flush=True)
    if args.json:
        print(MARK + json.dumps(rows), flush=True)
