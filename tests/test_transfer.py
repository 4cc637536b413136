"""Values across the boundary: what the sandbox encodes, the kernel rebuilds as data only."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_exec.errors import RemoteError, TransferError, remote_error
from jupyter_exec.runner import bootstrap, codec
from jupyter_exec.runner.sanitize import sanitize_bundle, sanitize_html
from jupyter_exec.runner.transfer import decode, pack_inputs

pytestmark = pytest.mark.ordinary_user


def roundtrip(value, trust=False, arrow=False):
    """Encode as the sandbox does, through JSON text, and decode as the kernel does."""
    encoded = bootstrap.encode(value, trust, arrow=arrow)
    text = codec.dumps(encoded)
    assert text == json.dumps(encoded, separators=(",", ":"))  # the payloads joined in are what JSON would write
    return decode(json.loads(text), trust)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.text(), children)
        | st.dictionaries(st.integers(), children)
        | st.frozensets(st.integers())
    ),
    max_leaves=20,
)


@given(json_like)
def test_plain_values_roundtrip_exactly(value):
    assert roundtrip(value) == value


def test_types_survive():
    value = {"t": (1, 2), "s": {1, 2}, 3: b"\x00\xff", "big": 2**80, "inf": math.inf, "$t": "not a tag"}
    back = roundtrip(value)
    assert back == value and isinstance(back["t"], tuple) and isinstance(back["s"], set)
    assert math.isnan(roundtrip(float("nan")))


def test_numpy_arrays_without_pickle():
    for array in (
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.linspace(0, 1, 5),
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.zeros((0, 3)),
        np.arange(6).reshape(2, 3).T,
    ):
        back = roundtrip(array)
        assert back.dtype == array.dtype and back.shape == array.shape and (back == array).all()
        assert back.flags.writeable
    assert roundtrip(np.float32(1.5)) == 1.5


def a_frame() -> pd.DataFrame:
    """Every kind of column the acceptance names, on a MultiIndex."""
    return pd.DataFrame(
        {
            "ints": np.arange(4, dtype=np.int64),
            "floats": [1.5, np.nan, -2.0, 1e300],
            "strings": ["a", None, "ç", ""],
            "when": pd.date_range("2024-03-30 12:00", periods=4, freq="13h", tz="Europe/Paris"),
            "naive": pd.to_datetime(
                [pd.Timestamp("2024-01-01"), None, pd.Timestamp("1999-12-31 23:59:59.5"), pd.Timestamp("2038-01-19")]
            ),
            "kind": pd.Categorical(["x", "y", "x", None], categories=["y", "x"], ordered=True),
            "maybe": pd.array([1, None, 3, 4], dtype="Int64"),
            "flags": [True, False, True, True],
        },
        index=pd.MultiIndex.from_arrays([["p", "p", "q", "q"], [1, 2, 1, 2]], names=["group", "n"]),
    )


@pytest.mark.parametrize("arrow", [False, True])
def test_dataframes_and_series(arrow):
    frame = a_frame()
    pd.testing.assert_frame_equal(roundtrip(frame, arrow=arrow), frame)
    for series in (frame["when"], pd.Series([1.5, 2.5], name="s"), pd.Series(["a", "b"]), frame["kind"]):
        pd.testing.assert_series_equal(roundtrip(series, arrow=arrow), series)
    empty = pd.DataFrame({"a": pd.Series([], dtype=float)}, index=pd.RangeIndex(5, 5))
    pd.testing.assert_frame_equal(roundtrip(empty, arrow=arrow), empty)


def test_a_column_of_objects_keeps_them():
    frame = pd.DataFrame({"mixed": [np.arange(2), (1, "a"), None]})
    back = roundtrip(frame)
    assert back["mixed"].dtype == object and back["mixed"][0].tolist() == [0, 1] and back["mixed"][1] == (1, "a")


def test_frames_without_arrow_are_npy_columns_and_json():
    encoded = bootstrap.encode(a_frame(), trust=False)
    assert "arrow" not in encoded and encoded["data"][0]["array"]["npy"]
    assert encoded["data"][2]["objects"] == ["a", None, "ç", ""]
    assert encoded["data"][5]["categories"]["objects"] == ["y", "x"]


def test_a_column_with_no_data_form_is_named():
    frame = pd.DataFrame({"p": pd.period_range("2024-01", periods=2, freq="M")})
    with pytest.raises(codec.Untransferable, match=r"value\['p'\] is a column of period\[M\]"):
        bootstrap.encode(frame, trust=False)


def test_numpy_string_dtype_travels_as_strings():
    array = np.array(["ab", "ç", ""], dtype=np.dtypes.StringDType())
    back = roundtrip(array)
    assert back.dtype == array.dtype and back.tolist() == array.tolist()


def test_a_pickle_that_cannot_load_names_the_package_and_both_versions():
    """A pickle that needs a module this side lacks: the package, its version where the pickle
    was made, and here."""
    made = {"python": "3.11.2", "numpy": "9.9.9"}
    tagged = {"$t": "pickle", "b64": "gASVGAAAAAAAAACMDm51bXB5Ll9ub3doZXJllIwBeJSTlC4=", "made_with": made}
    with pytest.raises(codec.Mismatch) as raised:
        codec.load_pickle(tagged)
    message = raised.value.describe("in the kernel", "in this sandbox")
    assert message.startswith(
        f"a pickle made with numpy 9.9.9 (in the kernel) cannot be read with numpy {np.__version__}"
    )
    assert "No module named 'numpy._nowhere'" in message
    with pytest.raises(TransferError, match=r"^a pickle made with numpy 9.9.9 \(in the sandbox\).*pip install"):
        decode(tagged, trust=True)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_objects_without_a_data_form_are_refused_unless_trusted():
    with pytest.raises(codec.Untransferable, match="Evil"):
        bootstrap.encode({"x": [Evil()]}, trust=False)
    with pytest.raises(codec.Untransferable):
        bootstrap.encode(np.array([Evil()], dtype=object), trust=False)
    encoded = bootstrap.encode(Evil(), trust=True)
    with pytest.raises(TransferError, match="--trust"):
        decode(encoded, trust=False)
    assert decode({"$t": "tuple", "v": [1]}, trust=False) == (1,)
    with pytest.raises(TransferError, match="unknown value tag"):
        decode({"$t": "exec", "v": "rm -rf /"}, trust=False)


def test_inputs_are_data_and_functions_are_pickled_by_value():
    """The kernel's side of --in: data as data, the rest by cloudpickle; the sandbox's side
    rebuilds both."""
    namespace = {"f": lambda x: x + 1, "n": 3, "a": np.arange(3), "df": a_frame()}
    document = json.loads(pack_inputs(("f", "n", "a", "df"), namespace))
    assert document["n"] == 3 and document["a"]["$t"] == "ndarray" and document["df"]["$t"] == "frame"
    assert document["f"]["$t"] == "pickle" and document["f"]["made_with"]["cloudpickle"]
    values = bootstrap.load_inputs({"inputs": document})
    assert values["f"](values["n"]) == 4 and values["a"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(values["df"], a_frame())
    assert pack_inputs((), namespace) is None


def test_html_is_sanitised():
    dirty = (
        '<table class="df"><tr><td onclick="x()">1</td></tr></table><script>alert(1)</script>'
        '<img src="javascript:alert(1)"><img src="data:image/png;base64,AAAA" onerror="x()">'
        '<a href="javascript:x()">a</a><a href="https://example.org">b</a><style>*{}</style><iframe src=x>t</iframe>'
    )
    clean = sanitize_html(dirty)
    assert '<table class="df"><tr><td>1</td></tr></table>' in clean
    for bad in ("script", "onclick", "onerror", "javascript", "style", "iframe"):
        assert bad not in clean
    assert '<img src="data:image/png;base64,AAAA">' in clean and 'href="https://example.org"' in clean
    assert sanitize_html("a < b & c") == "a &lt; b &amp; c"


def test_bundles_keep_only_safe_types():
    bundle = {
        "text/plain": "x",
        "text/html": "<b onclick=1>b</b>",
        "image/png": "not base64!",
        "application/javascript": "alert(1)",
        "image/svg+xml": "<svg onload=x()>",
    }
    assert sanitize_bundle(bundle, trust=False) == {"text/plain": "x", "text/html": "<b>b</b>"}
    assert sanitize_bundle(bundle, trust=True) == bundle


def test_remote_errors_are_also_the_builtin_type():
    error = remote_error("PermissionError", "denied", "Traceback...\nPermissionError: denied\n", run_id=3)
    assert isinstance(error, PermissionError) and isinstance(error, RemoteError) and error.run_id == 3
    assert error._render_traceback_()[-1] == "(raised inside the sandbox, run 3)"
    custom = remote_error("MyError", "boom", "tb")
    assert type(custom) is RemoteError and str(custom) == "MyError: boom"
    assert type(remote_error("SystemExit", "1", "tb")) is RemoteError


def test_a_remote_error_takes_only_a_builtin_exception_as_its_base():
    """The sandbox names the base: anything but a built-in exception class is today's plain RemoteError."""
    causes = [{"type": "gaierror", "errno": -2, "strerror": "no"}]
    gaierror = remote_error("gaierror", "[Errno -2] no", "tb", base="OSError", causes=causes)
    assert isinstance(gaierror, OSError) and (gaierror.errno, gaierror.strerror) == (-2, "no")
    assert str(gaierror) == "gaierror: [Errno -2] no" and type(gaierror).__name__ == "RemoteError"
    assert type(remote_error("Boom", "'x'", "tb", base="KeyError")) is type(
        remote_error("Other", "", "", base="KeyError")
    )
    for forged in ("os.system", "NotAnError", "print", "BaseException", "KeyboardInterrupt", "Exception", 7):
        error = remote_error("gaierror", "[Errno -2] no", "tb", base=forged)  # type: ignore[arg-type]
        assert type(error) is RemoteError and str(error) == "gaierror: [Errno -2] no", forged
    odd_causes = [{"errno": "2", "strerror": 5, "filename": ["/"]}]  # not plain data of their kind: left out
    odd = remote_error("OSError", "no", "tb", base="OSError", causes=odd_causes)  # type: ignore[list-item]
    assert isinstance(odd, OSError) and (odd.errno, odd.strerror, odd.filename) == (None, None, None)
    unicode = remote_error("UnicodeDecodeError", "bad byte", "tb", base="UnicodeDecodeError")  # needs 5 arguments
    assert isinstance(unicode, ValueError) and str(unicode) == "bad byte"
