"""Values across the boundary: what the sandbox encodes, the kernel rebuilds as data only."""

from __future__ import annotations

import base64
import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_exec.errors import RemoteError, TransferError, remote_error
from jupyter_exec.runner import bootstrap
from jupyter_exec.runner.sanitize import sanitize_bundle, sanitize_html
from jupyter_exec.runner.transfer import decode, pack_inputs

pytestmark = pytest.mark.ordinary_user


def roundtrip(value, trust=False):
    """Encode as the sandbox does, through JSON text, and decode as the kernel does."""
    return decode(json.loads(json.dumps(bootstrap.encode(value, trust))), trust)


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


def test_dataframes_and_series():
    frame = pd.DataFrame(
        {"a": [1, 2], "b": ["x", None], "c": pd.to_datetime(["2024-01-01", "2024-02-01"])},
        index=pd.Index([10, 20], name="i"),
    )
    pd.testing.assert_frame_equal(roundtrip(frame), frame)
    series = pd.Series([1.5, 2.5], name="s")
    pd.testing.assert_series_equal(roundtrip(series), series)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_objects_without_a_data_form_are_refused_unless_trusted():
    with pytest.raises(bootstrap.Untransferable, match="Evil"):
        bootstrap.encode({"x": [Evil()]}, trust=False)
    with pytest.raises(bootstrap.Untransferable):
        bootstrap.encode(np.array([Evil()], dtype=object), trust=False)
    encoded = bootstrap.encode(Evil(), trust=True)
    with pytest.raises(TransferError, match="--trust"):
        decode(encoded, trust=False)
    assert decode({"$t": "tuple", "v": [1]}, trust=False) == (1,)
    with pytest.raises(TransferError, match="unknown value tag"):
        decode({"$t": "exec", "v": "rm -rf /"}, trust=False)


def test_inputs_pickle_functions_by_value():
    namespace = {"f": lambda x: x + 1, "n": 3}
    values = pickle.loads(base64.b64decode(pack_inputs(("f", "n"), namespace)))
    assert values["f"](values["n"]) == 4
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
