"""Moving values across the sandbox boundary, kernel side.

Into the sandbox, variables travel as pickle, written by cloudpickle so that functions
and classes defined in the notebook (in ``__main__``, which the sandbox does not have)
travel by value: the kernel trusts itself. Everything else pickles as plain pickle
would, loadable without cloudpickle. Out of the sandbox, values arrive as
the tagged JSON that ``bootstrap.encode`` writes and are rebuilt here as data; a
``pickle`` tag is only opened when the user passed ``--trust``.
"""

from __future__ import annotations

import base64
import io
import pickle
from collections.abc import Mapping
from typing import Any

from jupyter_exec.errors import SpecError, TransferError
from jupyter_exec.extras import require

__all__ = ["decode", "pack_inputs"]


def pack_inputs(names: tuple[str, ...], namespace: Mapping[str, Any]) -> str | None:
    """The named kernel variables, pickled for the sandbox (base64 text)."""
    if not names:
        return None
    missing = [n for n in names if n not in namespace]
    if missing:
        raise SpecError(
            f"--in {missing[0]}: no variable {missing[0]!r} in the notebook; define it or drop it from --in"
        )
    import cloudpickle

    try:
        data = cloudpickle.dumps({n: namespace[n] for n in names})
    except Exception as error:
        raise SpecError(f"--in: cannot send {', '.join(names)} to the sandbox: {error}") from error
    return base64.b64encode(data).decode()


def decode(encoded: Any, trust: bool) -> Any:
    """Rebuild a value from tagged JSON."""
    if isinstance(encoded, list):
        return [decode(v, trust) for v in encoded]
    if not isinstance(encoded, dict):
        return encoded
    tag = encoded.get("$t")
    if tag is None:
        return {k: decode(v, trust) for k, v in encoded.items()}
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise TransferError(f"unknown value tag {tag!r} from the sandbox")
    return decoder(encoded, trust)


def _decode_pickle(encoded: dict[str, Any], trust: bool) -> Any:
    if not trust:
        raise TransferError("the sandbox sent a pickle but --trust was not given; refusing to unpickle it")
    return pickle.loads(base64.b64decode(encoded["b64"]))


def _decode_ndarray(encoded: dict[str, Any], trust: bool) -> Any:
    numpy = require("numpy", "a numpy array from the sandbox")

    dtype = numpy.dtype(encoded["dtype"])
    if dtype.hasobject:
        raise TransferError("an object array cannot be sent as data; pass --trust to pickle it")
    return numpy.frombuffer(base64.b64decode(encoded["b64"]), dtype=dtype).reshape(encoded["shape"]).copy()


def _decode_dataframe(encoded: dict[str, Any], trust: bool) -> Any:
    pandas = require("pandas", "a data frame from the sandbox")
    if "arrow" in encoded:
        pyarrow = require("pyarrow", "a data frame from the sandbox (sent as Arrow)")
        require("pyarrow.ipc", "a data frame from the sandbox (sent as Arrow)")

        reader = pyarrow.ipc.open_stream(base64.b64decode(encoded["arrow"]))
        frame = reader.read_all().to_pandas()
    else:
        frame = pandas.read_json(io.StringIO(encoded["json"]), orient="table")
    return frame.iloc[:, 0] if encoded.get("series") else frame


_DECODERS = {
    "int": lambda e, t: int(e["v"]),
    "float": lambda e, t: float(e["v"]),
    "bytes": lambda e, t: base64.b64decode(e["b64"]),
    "tuple": lambda e, t: tuple(decode(e["v"], t)),
    "set": lambda e, t: set(decode(e["v"], t)),
    "frozenset": lambda e, t: frozenset(decode(e["v"], t)),
    "dict": lambda e, t: {_hashable(decode(k, t)): decode(v, t) for k, v in e["v"]},
    "pickle": _decode_pickle,
    "ndarray": _decode_ndarray,
    "dataframe": _decode_dataframe,
}


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        raise TransferError("a dict key from the sandbox is a list; dict keys must be hashable")
    return key
