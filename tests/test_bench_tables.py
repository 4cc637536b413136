"""The speed tables' generator (benchmarks/generate.py, speed_tables.py): rows rendered into the
generated regions of docs/speed.md and README.md, nothing else of those files touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import generate  # noqa: E402
import speed_tables as tables  # noqa: E402


def _side(label: str, median: float) -> dict:
    return {"label": label, "median": median, "p90": median * 1.5, "p99": median * 2, "n": 60}


WARM = {
    "kind": "pair",
    "table": "cells",
    "id": "seccomp.warm@root",
    "job": "seccomp",
    "work": "a trivial cell",
    "who": "root",
    "ours": _side("`%%sandbox --backend seccomp`, pool warm", 7.25),
    "twin": _side("`subprocess.run`", 14.5),
    "ratio": 0.5,
    "load": [0.4, 1.26],
    "cores": 2,
    "commit": "abc1234",
    "date": "2026-12-06",
}
COLD = {
    **WARM,
    "id": "seccomp.cold@root",
    "ours": _side("`%%sandbox --backend seccomp`, pool off", 290.0),
    "ratio": 20.0,
}
RATE = {
    "kind": "rate",
    "table": "backends",
    "id": "backends.process@jx-user",
    "job": "backends-process",
    "work": "process (seccomp), 2 requesters",
    "who": "jx-user",
    "ours": {"label": "jupyter-exec", "p50": 9.0, "p99": 31.0, "n": 400, "per_second": 80.4},
    "twin": {"label": "`python -c`", "p50": 12.0, "p99": 20.0, "n": 300, "per_second": 61.0},
    "load": [2.0, 2.7],
    "cores": 2,
    "commit": "abc1234",
    "date": "2026-12-06",
}


def test_a_pair_row_shows_both_sides_their_ratio_load_commit_and_date():
    text = tables.table([WARM, COLD])
    lines = text.splitlines()
    assert lines[0].startswith("| work | who | ours | median / p90 | the twin |")
    assert lines[2] == (
        "| a trivial cell | root | `%%sandbox --backend seccomp`, pool warm | 7.25 ms / 10.9 ms | `subprocess.run` |"
        " 14.5 ms / 21.8 ms | **0.50×** | 0.4–1.3 | `abc1234`, 2026-12-06 |"
    )
    assert "| 290 ms / 435 ms |" in lines[3] and "**20.0×**" in lines[3]


def test_figures_keep_the_digits_that_mean_something():
    assert [tables.ms(v) for v in (0.0527, 7.25, 14.54, 512.4, 58450.0)] == [
        "0.053 ms",
        "7.25 ms",
        "14.5 ms",
        "512 ms",
        "58.5 s",
    ]
    assert [tables.ratio(v) for v in (0.0347, 0.78, 33.46, 509.99)] == ["0.035×", "0.78×", "33.5×", "510×"]


def test_a_rate_row_shows_first_output_and_runs_per_second_of_both():
    (line,) = tables.table([RATE]).splitlines()[2:]
    assert line == (
        "| process (seccomp), 2 requesters | jx-user | 9.00 ms / 31.0 ms | 80.4 | `python -c` | 12.0 ms / 20.0 ms |"
        " 61.0 | 2.0–2.7 *busy* | `abc1234`, 2026-12-06 |"
    )


def test_a_table_with_no_rows_says_how_to_measure_them():
    assert "bash scripts/bench" in tables.table([])


def test_fill_replaces_only_its_region():
    text = "before\n<!-- bench:cells -->\nold figures\n<!-- /bench:cells -->\nafter\n"
    assert tables.fill(text, "cells", "new") == "before\n<!-- bench:cells -->\nnew\n<!-- /bench:cells -->\nafter\n"
    with pytest.raises(ValueError, match="no region <!-- bench:map -->"):
        tables.fill(text, "map", "new")


def test_every_region_the_generator_writes_is_in_the_docs():
    bodies = generate.regions([WARM, COLD, RATE])
    for path, names in generate.DOCS.items():
        text = path.read_text()
        for name in names:
            filled = tables.fill(text, name, bodies[name])
            assert bodies[name] in filled
    assert (
        "| `%%sandbox --backend seccomp`, pool warm | 7.25 ms (10.9 ms) | `subprocess.run`: 14.5 ms | **0.50×**"
        " | 0.4–1.3 |" in bodies["glance"]
    )
    assert "| the same, pool off | 290 ms (435 ms) |" in bodies["glance"]


def test_a_job_run_again_replaces_its_rows_and_keeps_the_others():
    old = [WARM, RATE]
    new = [{**WARM, "ratio": 0.7, "commit": "def5678"}]
    merged = generate.merge(old, new, generate.JOBS)
    assert [row["id"] for row in merged] == ["seccomp.warm@root", "backends.process@jx-user"]
    assert merged[0]["commit"] == "def5678" and merged[1] is RATE
