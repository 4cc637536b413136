"""Values as data across the sandbox boundary, both ways: the tagged JSON both sides read.

Standard library only at import, like the bootstrap it is shipped beside: the kernel encodes
``--in`` values and decodes results with it, the sandbox the reverse, each side on its own
Python, numpy and pandas (numpy >= 1.21, pandas >= 1.3), imported only when a value needs
them. Nothing here depends on the two sides having the same versions:

- JSON's own values as themselves; ``{"$t": TAG, ...}`` for the rest (big ints, non-finite
  floats, bytes, tuples, sets, dicts with other keys);
- numpy arrays as ``.npy`` (read with ``allow_pickle=False``), tagged with the numpy that
  wrote them; numpy 2's ``StringDType`` as a list of strings, which numpy 1 cannot hold;
- DataFrames and Series as Arrow IPC when the encoder is told the reader has pyarrow (and
  it has too), otherwise column by column: numbers, booleans and datetimes as ``.npy``,
  time zones, categories, nullable integers and strings described in the JSON, and the
  index (a ``MultiIndex`` level by level) the same way;
- anything else as a pickle, only where the encoder is given a ``pickler`` (the kernel's
  cloudpickle for ``--in``; the sandbox's pickle under ``--trust``), tagged with the
  versions it was made with.

A value that has no form on the reading side raises ``Mismatch``, which carries the
package and both versions: each side words the fix (its ``describe``).
"""

import base64
import io
import json
import math
import os
import pickle
import re
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, Optional

    Pickler = Optional[Callable[[Any], bytes]]

FORMAT = 2  # of the tagged JSON: what a value kept from an older one (the run cache) is checked against
_VERSIONED = ("numpy", "pandas", "pyarrow", "cloudpickle")  # what a pickle's loading most often hinges on


class Untransferable(Exception):
    """A value has no data form and no pickler was given; the message names where it is."""


class Mismatch(Exception):
    """A value cannot be rebuilt here: ``package`` is at ``theirs`` where it was made and at
    ``ours`` here (None: not installed); ``detail`` says what failed."""

    def __init__(self, what: str, package: str, theirs: "str | None", ours: "str | None", detail: str) -> None:
        self.what, self.package, self.theirs, self.ours, self.detail = what, package, theirs, ours, detail
        super().__init__(self.describe("the other side", "here"))

    def describe(self, there: str, here: str) -> str:
        """One line: what was made with what ``there`` and what ``here`` has."""
        made = f"{self.package} {self.theirs}" if self.theirs else self.package
        has = f"{self.package} {self.ours}" if self.ours else f"no {self.package}"
        return f"{self.what} made with {made} ({there}) cannot be read with {has} ({here}): {self.detail}"


def versions(value: object = None) -> "dict[str, str]":
    """Python's version and those of the packages a value's pickle may need, as loaded now."""
    found = {"python": "%d.%d.%d" % sys.version_info[:3]}
    names = [*_VERSIONED, type(value).__module__.partition(".")[0]]
    for name in names:
        version = getattr(sys.modules.get(name), "__version__", None)
        if isinstance(version, str):
            found[name] = version
    return found


def encode(value: "Any", pickler: "Pickler" = None, path: str = "value", arrow: bool = False) -> "Any":
    """Tagged JSON for ``value``: data where it has a data form, else ``pickler``'s bytes, else
    ``Untransferable``. ``arrow``: the reader has pyarrow, so frames may travel as Arrow."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else {"$t": "int", "v": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$t": "float", "v": repr(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$t": "bytes", "b64": _b64(bytes(value))}
    if type(value) in (list, tuple, set, frozenset):
        items = [encode(v, pickler, f"{path}[{i}]", arrow) for i, v in enumerate(value)]
        return items if type(value) is list else {"$t": type(value).__name__, "v": items}
    if type(value) is dict:
        if all(type(k) is str for k in value) and "$t" not in value:
            return {k: encode(v, pickler, f"{path}[{k!r}]", arrow) for k, v in value.items()}
        pairs = [
            [encode(k, pickler, path, arrow), encode(v, pickler, f"{path}[{k!r}]", arrow)] for k, v in value.items()
        ]
        return {"$t": "dict", "v": pairs}
    try:
        special = _encode_library_value(value, path, arrow)
    except Untransferable:
        if pickler is None:
            raise
        special = None
    if special is not None:
        return special
    if pickler is not None:
        return {"$t": "pickle", "b64": _b64(pickler(value)), "made_with": versions(value)}
    raise Untransferable(f"{path} is a {type(value).__module__}.{type(value).__qualname__}")


class _Base64(str):
    """Base64 text: nothing in it needs escaping, so ``dumps`` splices it in unscanned."""


def _b64(data: "Any") -> str:
    return _Base64(base64.b64encode(data).decode("ascii"))


def _encode_library_value(value: object, path: str, arrow: bool) -> "Any":
    """numpy arrays and scalars, pandas frames and series; None for anything else."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return _encode_array(numpy, value, path)
        if isinstance(value, numpy.generic) and not isinstance(value, numpy.object_):
            return encode(value.item(), None, path)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        return _encode_frame(pandas, value, path, arrow)
    return None


def _encode_array(numpy: "ModuleType", array: "Any", path: str) -> "dict[str, Any]":
    tagged = {"$t": "ndarray", "numpy": numpy.__version__}
    if array.dtype.kind == "T":  # numpy 2's StringDType: no .npy form
        return {**tagged, "strings": array.ravel().tolist(), "shape": list(array.shape)}
    if array.dtype.hasobject:
        raise Untransferable(f"{path} is a numpy array of Python objects")
    buffer = io.BytesIO()
    numpy.lib.format.write_array(buffer, array, allow_pickle=False)
    return {**tagged, "npy": _b64(buffer.getbuffer())}


_MASKED = ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64", "boolean")


def _encode_frame(pandas: "ModuleType", value: "Any", path: str, arrow: bool) -> "dict[str, Any]":
    series = isinstance(value, pandas.Series)
    frame = value.to_frame() if series else value
    tagged: dict[str, Any] = {"$t": "frame", "pandas": pandas.__version__, "series": series}
    if series:
        tagged["name"] = encode(value.name, None, f"{path}.name")
    stream = _arrow_stream(frame) if arrow else None
    if stream is not None:
        return {**tagged, "arrow": _b64(stream), "pyarrow": sys.modules["pyarrow"].__version__}
    columns = [_encode_column(pandas, frame.iloc[:, i], f"{path}[{label!r}]") for i, label in enumerate(frame.columns)]
    return {
        **tagged,
        "index": _encode_index(pandas, frame.index, f"{path}.index"),
        "columns": _encode_index(pandas, frame.columns, f"{path}.columns"),
        "data": columns,
    }


def _arrow_stream(frame: "Any") -> "Any":
    """The frame as an Arrow IPC stream, or None when pyarrow is missing or cannot hold it."""
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError:
        return None
    try:
        table = pyarrow.Table.from_pandas(frame)
    except (pyarrow.ArrowException, TypeError, ValueError):
        return None  # mixed objects: column by column says which one has no data form
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _encode_index(pandas: "ModuleType", index: "Any", path: str) -> "dict[str, Any]":
    if isinstance(index, pandas.MultiIndex):
        levels = [_encode_column(pandas, index.get_level_values(i), path) for i in range(index.nlevels)]
        return {"levels": levels, "names": [encode(name, None, path) for name in index.names]}
    if isinstance(index, pandas.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "name": encode(index.name, None, path)}
    return {"values": _encode_column(pandas, index, path), "name": encode(index.name, None, path)}


def _encode_column(pandas: "ModuleType", values: "Any", path: str) -> "dict[str, Any]":
    """One column or index level (a Series or an Index) in a form any pandas >= 1.3 rebuilds."""
    numpy = sys.modules["numpy"]
    dtype = values.dtype
    if isinstance(dtype, pandas.CategoricalDtype):
        categorical = values.array
        return {
            "categories": _encode_column(pandas, categorical.categories, path),
            "codes": _encode_array(numpy, numpy.asarray(categorical.codes), path),
            "ordered": bool(categorical.ordered),
        }
    if isinstance(dtype, pandas.DatetimeTZDtype):
        utc = values.array.tz_convert("UTC").tz_localize(None)
        return {"tz": str(dtype.tz), "array": _encode_array(numpy, numpy.asarray(utc), path)}
    if str(dtype) in _MASKED:
        empty = dtype.numpy_dtype.type(0)
        return {
            "masked": str(dtype),
            "array": _encode_array(numpy, values.to_numpy(dtype=dtype.numpy_dtype, na_value=empty), path),
            "mask": _encode_array(numpy, numpy.asarray(values.isna()), path),
        }
    if isinstance(dtype, pandas.StringDtype):
        strings = values.astype(object).where(values.notna(), None).tolist()
        return {"objects": strings, "dtype": str(dtype)}
    if isinstance(dtype, numpy.dtype) and dtype.kind == "O":
        return {"objects": [encode(v, None, path) for v in values.tolist()], "dtype": "object"}
    if isinstance(dtype, numpy.dtype):
        return {"array": _encode_array(numpy, values.to_numpy(), path)}
    raise Untransferable(f"{path} is a column of {dtype}, which has no data form")


def decode(encoded: "Any", unpickle: "Callable[[dict[str, Any]], Any]") -> "Any":
    """The value ``encoded`` describes, built with this side's libraries; a pickle is
    ``unpickle``'s to open (or refuse)."""
    if isinstance(encoded, list):
        return [decode(v, unpickle) for v in encoded]
    if not isinstance(encoded, dict):
        return encoded
    tag = encoded.get("$t")
    if tag is None:
        return {k: decode(v, unpickle) for k, v in encoded.items()}
    if tag == "pickle":
        return unpickle(encoded)
    if tag == "ndarray":
        return _decode_array(encoded)
    if tag == "frame":
        return _decode_frame(encoded)
    if tag == "dict":
        return {_hashable(decode(k, unpickle)): decode(v, unpickle) for k, v in encoded["v"]}
    if tag in _PLAIN:
        return _PLAIN[tag](encoded, unpickle)
    raise Unreadable(f"unknown value tag {tag!r}")


class Unreadable(Exception):
    """Encoded data this codec does not read (an unknown tag, a list as a dict key)."""


_PLAIN: "dict[str, Callable[[dict[str, Any], Any], Any]]" = {
    "int": lambda e, u: int(e["v"]),
    "float": lambda e, u: float(e["v"]),
    "bytes": lambda e, u: base64.b64decode(e["b64"]),
    "tuple": lambda e, u: tuple(decode(e["v"], u)),
    "set": lambda e, u: set(decode(e["v"], u)),
    "frozenset": lambda e, u: frozenset(decode(e["v"], u)),
}


def _hashable(key: "Any") -> "Any":
    if isinstance(key, list):
        raise Unreadable("a dict key is a list; dict keys must be hashable")
    return key


def _need(package: str, what: str, theirs: "str | None") -> "Any":
    try:
        return __import__(package)
    except ImportError:
        raise Mismatch(what, package, theirs, None, f"{package} is not installed") from None


def _refuse(encoded: "dict[str, Any]") -> "Any":
    raise Unreadable("a pickle inside a data value")


def _decode_array(encoded: "dict[str, Any]") -> "Any":
    theirs = encoded.get("numpy")
    numpy = _need("numpy", "a numpy array", theirs)
    if "strings" in encoded:
        string_dtype = getattr(getattr(numpy, "dtypes", None), "StringDType", None)
        if string_dtype is None:
            raise Mismatch(
                "a numpy StringDType array", "numpy", theirs, numpy.__version__, "numpy 1 has no StringDType"
            )
        return numpy.array(encoded["strings"], dtype=string_dtype()).reshape(encoded["shape"])
    npy = io.BytesIO(base64.b64decode(encoded["npy"]))
    try:
        return numpy.lib.format.read_array(npy, allow_pickle=False)
    except (ValueError, TypeError) as error:  # a dtype this numpy does not know
        raise Mismatch("a numpy array", "numpy", theirs, numpy.__version__, _first_line(error)) from None


def _decode_frame(encoded: "dict[str, Any]") -> "Any":
    what = "a pandas Series" if encoded["series"] else "a pandas DataFrame"
    pandas = _need("pandas", what, encoded.get("pandas"))
    if "arrow" in encoded:
        _need("pyarrow", what, encoded.get("pyarrow"))
        import pyarrow.ipc

        frame = pyarrow.ipc.open_stream(base64.b64decode(encoded["arrow"])).read_all().to_pandas()
    else:
        data = {i: _decode_column(pandas, column) for i, column in enumerate(encoded["data"])}
        frame = pandas.DataFrame(data, index=_decode_index(pandas, encoded["index"]))
        frame.columns = _decode_index(pandas, encoded["columns"])
    if not encoded["series"]:
        return frame
    series = frame.iloc[:, 0]
    series.name = decode(encoded["name"], _refuse)
    return series


def _decode_index(pandas: "ModuleType", encoded: "dict[str, Any]") -> "Any":
    if "levels" in encoded:
        levels = [_decode_column(pandas, level) for level in encoded["levels"]]
        return pandas.MultiIndex.from_arrays(levels, names=[decode(name, _refuse) for name in encoded["names"]])
    name = decode(encoded["name"], _refuse)
    if "range" in encoded:
        return pandas.RangeIndex(*encoded["range"], name=name)
    return pandas.Index(_decode_column(pandas, encoded["values"]), name=name)


def _decode_column(pandas: "ModuleType", encoded: "dict[str, Any]") -> "Any":
    """An array-like pandas takes as a column or an index level, in this pandas's own dtypes."""
    if "categories" in encoded:
        categories = pandas.Index(_decode_column(pandas, encoded["categories"]))
        codes = _decode_array(encoded["codes"])
        return pandas.Categorical.from_codes(codes, categories=categories, ordered=encoded["ordered"])
    if "tz" in encoded:
        return pandas.DatetimeIndex(_decode_array(encoded["array"])).tz_localize("UTC").tz_convert(encoded["tz"]).array
    if "masked" in encoded:
        if encoded["masked"] not in _MASKED:
            raise Unreadable(f"unknown nullable dtype {encoded['masked']!r}")
        array = pandas.array(_decode_array(encoded["array"]), dtype=encoded["masked"])
        array[_decode_array(encoded["mask"])] = pandas.NA
        return array
    if "objects" in encoded:  # a string column's are JSON's own strings and nulls, read as they are
        objects = encoded["objects"] if encoded["dtype"] != "object" else decode(encoded["objects"], _refuse)
        return _objects(pandas, objects, encoded["dtype"])
    return _decode_array(encoded["array"])


def _objects(pandas: "ModuleType", values: "list[Any]", dtype: str) -> "Any":
    """Strings (and what else a column of objects held): pandas's ``string`` dtype when they
    were in one, this pandas's own choice for a column of strings, else objects as they are."""
    if dtype == "string":
        return pandas.array(values, dtype="string")
    if all(isinstance(v, str) or v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return pandas.Series(values, dtype=None if values else object).array  # pandas >= 3: str; before: object
    numpy = sys.modules["numpy"]
    array = numpy.empty(len(values), dtype=object)
    array[:] = values
    return array


def load_pickle(encoded: "dict[str, Any]", what: str = "a pickle") -> "Any":
    """A pickle's value, or ``Mismatch`` naming the package it needs and both versions."""
    made = encoded.get("made_with") or {}
    try:
        return pickle.loads(base64.b64decode(encoded["b64"]))
    except Exception as error:
        package = _culprit(error)
        if package is None:
            here = "%d.%d.%d" % sys.version_info[:3]
            raise Mismatch(what, "Python", made.get("python"), here, _first_line(error)) from error
        raise Mismatch(what, package, made.get(package), _version_here(package), _first_line(error)) from error


def _culprit(error: BaseException) -> "str | None":
    """The top-level package a failed unpickling looked for: a missing module, or the module
    that lacks the name it wanted."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        return error.name.partition(".")[0]
    found = re.search(r"<module '([\w.]+)'", str(error))
    return found.group(1).partition(".")[0] if found else None


def _version_here(package: str) -> "str | None":
    try:
        module = __import__(package)
    except ImportError:
        return None
    return str(getattr(module, "__version__", "installed"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def dumps(document: "Any") -> str:
    """Encoded values (and what holds them) as compact JSON text. Base64 payloads are put in
    by a join, not through the encoder, which would look at each of a 100 MB array's characters."""
    payloads: "list[str]" = []
    marker = "\x00" + os.urandom(8).hex()

    def aside(node: "Any") -> "Any":
        if type(node) is _Base64:
            payloads.append(node)
            return marker
        if type(node) is dict:
            return {k: aside(v) for k, v in node.items()}
        if type(node) is list and node and type(node[0]) in (dict, list, _Base64):
            return [aside(v) for v in node]
        return node

    text = json.dumps(aside(document), separators=(",", ":"))
    if not payloads:
        return text
    pieces = text.split(json.dumps(marker))
    joined = [pieces[0]]
    for payload, piece in zip(payloads, pieces[1:], strict=True):
        joined += ['"', payload, '"', piece]
    return "".join(joined)
