"""Moving values across the sandbox boundary, kernel side.

Both ways values travel as data, in ``codec``'s tagged JSON, so a DataFrame made by the
kernel's pandas 3 is rebuilt by the sandbox's pandas 1.5 and back. Into the sandbox, what
has no data form (a function or class defined in the notebook, an arbitrary object) is
pickled by cloudpickle, which sends what lives in ``__main__`` by value: the kernel trusts
itself. Out of the sandbox, a ``pickle`` tag is only opened when the user passed
``--trust``. A value one side cannot rebuild is one line naming the package, both
versions and the fix.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from typing import Any

from jupyter_exec.errors import MissingExtraError, SpecError, TransferError
from jupyter_exec.extras import EXTRA_OF, install_hint

from . import codec

__all__ = ["decode", "kernel_reads_arrow", "pack_inputs"]


def pack_inputs(names: tuple[str, ...], namespace: Mapping[str, Any]) -> str | None:
    """The named kernel variables as the sandbox reads them (``codec``'s JSON text)."""
    if not names:
        return None
    missing = [n for n in names if n not in namespace]
    if missing:
        raise SpecError(
            f"--in {missing[0]}: no variable {missing[0]!r} in the notebook; define it or drop it from --in"
        )
    import cloudpickle

    encoded = {}
    for name in names:
        try:
            encoded[name] = codec.encode(namespace[name], cloudpickle.dumps, name)
        except Exception as error:
            raise SpecError(f"--in {name}: cannot send it to the sandbox: {error}") from error
    return codec.dumps(encoded)


@functools.cache
def kernel_reads_arrow() -> bool:
    """Whether results may come back as Arrow: this kernel has pyarrow."""
    return importlib.util.find_spec("pyarrow") is not None


def decode(encoded: Any, trust: bool) -> Any:
    """Rebuild a value from the sandbox's tagged JSON, with this kernel's libraries."""
    try:
        return codec.decode(encoded, lambda tagged: _unpickle(tagged, trust))
    except codec.Mismatch as mismatch:
        if mismatch.ours is None and mismatch.package in EXTRA_OF:  # the kernel lacks an extra of ours
            needs = f"{mismatch.what} from the sandbox needs {mismatch.package}, which is not installed"
            raise MissingExtraError(f"{needs}: {install_hint(mismatch.package)}", EXTRA_OF[mismatch.package]) from None
        raise TransferError(f"{mismatch.describe('in the sandbox', 'in the kernel')}; {_fix(mismatch)}") from None
    except codec.Unreadable as why:
        raise TransferError(f"the sandbox sent a value the kernel cannot read: {why}") from None


def _unpickle(encoded: dict[str, Any], trust: bool) -> Any:
    if not trust:
        raise TransferError("the sandbox sent a pickle but --trust was not given; refusing to unpickle it")
    return codec.load_pickle(encoded)


def _fix(mismatch: codec.Mismatch) -> str:
    package, theirs = mismatch.package, mismatch.theirs
    if mismatch.ours is None:
        return f"pip install {package} in the kernel's environment"
    wanted = f"=={theirs}" if theirs else ""
    return f"pip install '{package}{wanted}' in the kernel, or send back plainer data (lists, str, numbers)"
