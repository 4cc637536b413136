"""Markdown tables from benchmark rows (``speed_rows.py``), and the generated regions they fill.

A generated region of a Markdown file sits between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``; ``fill`` replaces what is between them and nothing else, so the prose
around a table is written by hand and every figure inside comes from a run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from speed_rows import Row

PAIR_HEADER = (
    "| work | who | ours | median / p90 | the twin | median / p90 | ours ÷ twin | load | measured |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)
RATE_HEADER = (
    "| backend | who | first output p50 / p99 | creations/s | the raw tool | first output p50 / p99 | runs/s"
    " | load | measured |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)
GLANCE_HEADER = ("| | median (p90) | against the same work by | ratio | load |", "| --- | --- | --- | --- | --- |")


def ms(value: float) -> str:
    """A duration with the digits that mean something (in seconds from 10 s)."""
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms" if value >= 1 else f"{value:.3f} ms"


def ratio(value: float) -> str:
    if value < 0.1:
        return f"{value:.3f}×"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def load(row: Row) -> str:
    """The load average's range, marked *busy* when it passed the cores the machine has."""
    low, high = row["load"]
    shown = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"
    return f"{shown} *busy*" if high > row.get("cores", high) else shown


def measured(row: Row) -> str:
    return f"`{row.get('commit', '?')}`, {row.get('date', '?')}"


def pair_line(row: Row) -> str:
    ours, twin = row["ours"], row["twin"]
    return (
        f"| {row['work']} | {row['who']} | {ours['label']} | {ms(ours['median'])} / {ms(ours['p90'])} |"
        f" {twin['label']} | {ms(twin['median'])} / {ms(twin['p90'])} | **{ratio(row['ratio'])}** |"
        f" {load(row)} | {measured(row)} |"
    )


def rate_line(row: Row) -> str:
    ours, twin = row["ours"], row["twin"]
    return (
        f"| {row['work']} | {row['who']} | {ms(ours['p50'])} / {ms(ours['p99'])} | {ours['per_second']:.1f} |"
        f" {twin['label']} | {ms(twin['p50'])} / {ms(twin['p99'])} | {twin['per_second']:.1f} |"
        f" {load(row)} | {measured(row)} |"
    )


def table(rows: Iterable[Row]) -> str:
    """One table of rows of one kind (pairs or rates), in the order given."""
    rows = list(rows)
    if not rows:
        return "*(not measured yet: run `bash scripts/bench`)*"
    rates = rows[0]["kind"] == "rate"
    header = RATE_HEADER if rates else PAIR_HEADER
    return "\n".join([*header, *((rate_line if rates else pair_line)(row) for row in rows)])


def glance(rows: Mapping[str, Row], picks: Iterable[tuple[str, str]]) -> str:
    """README's short table: the rows ``picks`` names (row id, what to call it), where measured."""
    lines = list(GLANCE_HEADER)
    for row_id, name in picks:
        row = rows.get(row_id)
        if row is None:
            continue
        ours, twin = row["ours"], row["twin"]
        lines.append(
            f"| {name} | {ms(ours['median'])} ({ms(ours['p90'])}) | {twin['label']}: {ms(twin['median'])} |"
            f" **{ratio(row['ratio'])}** | {load(row)} |"
        )
    return "\n".join(lines)


def fill(text: str, name: str, body: str) -> str:
    """``text`` with the region ``name`` holding ``body``; a file without the region is an error."""
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no region <!-- bench:{name} --> ... <!-- /bench:{name} --> to fill")
    return pattern.sub(lambda found: f"{found[1]}{body}\n{found[2]}", text, count=1)
