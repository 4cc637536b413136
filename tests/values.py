"""The values every backend must carry both ways, as cells: the kernel builds them with its
numpy and pandas, a sandbox cell receives them (``--in``), rebuilds copies with its own and
sends everything back (``--out``), and the kernel checks each came back equal."""

from __future__ import annotations

from conftest import Kernel

MAKE = """\
import numpy as np, pandas as pd
df = pd.DataFrame(
    {
        "ints": np.arange(4, dtype=np.int64),
        "floats": [1.5, np.nan, -2.0, 1e300],
        "strings": ["a", None, "ç", ""],
        "when": pd.date_range("2024-03-30 12:00", periods=4, freq="13h", tz="Europe/Paris"),
        "kind": pd.Categorical(["x", "y", "x", None], categories=["y", "x"], ordered=True),
        "maybe": pd.array([1, None, 3, 4], dtype="Int64"),
    },
    index=pd.MultiIndex.from_arrays([["p", "p", "q", "q"], [1, 2, 1, 2]], names=["group", "n"]),
)
s = pd.Series([0.5, np.nan, 2.5], index=["a", "b", "c"], name="s")
arrays = {
    "ints": np.arange(12, dtype=np.int16).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.uint64).reshape(2, 3)),
    "floats": np.array([0.25, np.nan, np.inf], dtype=np.float32),
    "complex": np.array([1 + 2j]),
    "bools": np.array([True, False]),
    "days": np.array(["2024-01-01", "NaT"], dtype="datetime64[D]"),
    "text": np.array(["ab", "ç"]),
}
bundle = {"df": df, "s": s, "arrays": arrays, 3: (1.5, None, b"\\x00")}
"""

ROUND_TRIP = """\
import numpy, pandas
print(numpy.__version__, pandas.__version__)
print(dict(df.dtypes.astype(str)), df.index.names, s.dtype, sorted((k, str(v.dtype)) for k, v in arrays.items()))
df2, s2, arrays2, bundle2 = df, s, arrays, bundle
made = pandas.DataFrame({"x": [1, 2]}, index=pandas.Index(["u", "v"], name="k"))
"""

CHECK = """\
# pandas < 2 holds datetimes in nanoseconds only: the values come back, in that unit
unit = df.astype({"when": df2["when"].dtype})
pd.testing.assert_frame_equal(df2, unit)
pd.testing.assert_series_equal(s2, s)
pd.testing.assert_frame_equal(bundle2["df"], unit)
pd.testing.assert_series_equal(bundle2["s"], s)
assert bundle2[3] == bundle[3], bundle2[3]
for name, array in arrays.items():
    for back in (arrays2[name], bundle2["arrays"][name]):
        assert back.dtype == array.dtype and back.shape == array.shape, (name, back)
        np.testing.assert_array_equal(back, array)
pd.testing.assert_frame_equal(made, pd.DataFrame({"x": [1, 2]}, index=pd.Index(["u", "v"], name="k")))
print("all equal")
"""

SEEN = (
    "{'ints': 'int64', 'floats': 'float64', 'strings': 'object', 'when': 'datetime64[ns, Europe/Paris]', "
    "'kind': 'category', 'maybe': 'Int64'} ['group', 'n'] float64 [('bools', 'bool'), ('complex', 'complex128'), "
    "('days', 'datetime64[D]'), ('floats', 'float32'), ('fortran', 'uint64'), ('ints', 'int16'), ('text', '<U2')]"
)  # as pandas < 3 shows the kernel's frame ('object' strings, nanoseconds)


def round_trip(kernel: Kernel, magic: str) -> tuple[str, str]:
    """Every kind of value in and out through ``magic``; the sandbox's numpy and pandas
    versions and what its cell saw of them."""
    kernel.run(MAKE, check=True)
    cell = kernel.run(f"{magic} --in df,s,arrays,bundle --out df2,s2,arrays2,bundle2,made\n{ROUND_TRIP}", check=True)
    versions, seen = cell.stdout.splitlines()[:2]
    assert kernel.run(CHECK, check=True).stdout == "all equal\n"
    return versions, seen
