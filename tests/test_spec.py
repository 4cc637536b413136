"""Units, limits and option values: what users type, and the errors they get."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_exec.errors import SpecError
from jupyter_exec.spec import Limits, Mount, parse_env, parse_names
from jupyter_exec.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * 2**20),
        ("2g", 2 * 2**30),
        ("1.5GiB", int(1.5 * 2**30)),
        ("100kb", 100_000),
        ("1048576", 2**20),
        (" 64 MB ", 64_000_000),
        ("1t", 2**40),
        (4096, 4096),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "-1m", "0", "12q", "1.2.3g", "m"])
def test_bad_sizes_name_the_option_and_the_fix(text):
    with pytest.raises(SpecError, match=r"--mem: .*(512m|positive)"):
        parse_size(text, "--mem")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("2.5", 2.5),
        (7, 7),
        ("1d", 86400),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "5 minutes", "-3", "0", "1x", "m5", "inf", "nan"])
def test_bad_durations(text):
    with pytest.raises(SpecError, match="--timeout"):
        parse_duration(text, "--timeout")


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from(["k", "m", "g", "kib", "mb", ""]))
def test_size_units_multiply(number, unit):
    factor = {"k": 1024, "m": 2**20, "g": 2**30, "kib": 1024, "mb": 10**6, "": 1}[unit]
    assert parse_size(f"{number}{unit}") == number * factor


@given(
    st.integers(min_value=0, max_value=48),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_compound_durations(h, m, s):
    text = "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)
    if text:
        assert parse_duration(text) == h * 3600 + m * 60 + s


def test_limits_parse_and_merge():
    mine = Limits.parse(memory="256m", timeout="2s", network=True)
    defaults = Limits.parse(memory="2g", pids="256", timeout="10m")
    merged = mine.merged_over(defaults)
    assert merged == Limits(memory=256 * 2**20, timeout=2.0, pids=256, network=True)
    with pytest.raises(SpecError, match="--cpus"):
        Limits.parse(cpus="0")
    with pytest.raises(SpecError, match="--pids: must be at least 1"):
        Limits.parse(pids="0")
    with pytest.raises(SpecError, match="unknown limit"):
        Limits.parse(disk="1g")


def test_mounts(tmp_path):
    (tmp_path / "data").mkdir()
    assert Mount.parse("data", tmp_path) == Mount(tmp_path / "data", str(tmp_path / "data"), True)
    assert Mount.parse("data:/d:rw", tmp_path) == Mount(tmp_path / "data", "/d", False)
    assert Mount.parse(f"{tmp_path}/data:ro", tmp_path).read_only
    with pytest.raises(SpecError, match="does not exist"):
        Mount.parse("nope", tmp_path)
    with pytest.raises(SpecError, match="absolute path"):
        Mount.parse("data:relative", tmp_path)
    with pytest.raises(SpecError, match="HOST"):
        Mount.parse("data:/a:/b:ro", tmp_path)


def test_env_and_names():
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(SpecError, match="NAME=VALUE"):
        parse_env(["1A=2"])
    assert parse_names(" a, b ,c", "--out") == ("a", "b", "c")
    with pytest.raises(SpecError, match="not a variable name"):
        parse_names("a, b-c", "--out")
