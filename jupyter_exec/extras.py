"""The optional parts of jupyter-exec, each a pip extra, and the error when one is missing.

A plain ``pip install jupyter-exec`` runs the seccomp and local sandboxes; Ray, Docker,
the widgets, the side panel's server extension and data frames each come with an extra.
What needs one imports it through ``require``, so a missing one is a single line naming
the ``pip install`` that adds it, never a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["EXTRA_OF", "install_hint", "require"]

#: The extra that brings each optional top-level module.
EXTRA_OF = {
    "ray": "ray",
    "docker": "docker",
    "anywidget": "widgets",
    "ipywidgets": "widgets",
    "jupyter_server": "server",
    "numpy": "data",
    "pandas": "data",
    "pyarrow": "data",
}


def install_hint(module: str) -> str:
    """The command that installs ``module`` (a key of ``EXTRA_OF``) with jupyter-exec."""
    return f"pip install 'jupyter-exec[{EXTRA_OF[module]}]'"


def require(module: str, what: str) -> ModuleType:
    """``module`` imported, or a ``MissingExtraError`` saying that ``what`` needs it and how to
    install it. A module missing inside an installed one is not ours to explain: it propagates."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.partition(".")[0]
        if (error.name or "").partition(".")[0] != top:
            raise
        raise MissingExtraError(
            f"{what} needs {top}, which is not installed: {install_hint(top)}", EXTRA_OF[top]
        ) from None
