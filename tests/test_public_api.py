"""The public names are a promise: pin them."""

import jupyter_exec


def test_public_names():
    assert set(jupyter_exec.__all__) >= {
        "BackendUnavailableError", "JupyterExecError", "Limits", "Manager", "Mount", "NodeFailedError",
        "RemoteError", "ResourceLimitError", "RunResult", "RunSpec", "SpecError", "TaskCancelledError",
        "TaskError", "TaskTimeoutError", "TransferError", "load_ipython_extension", "unload_ipython_extension",
    }
    for name in jupyter_exec.__all__:
        assert hasattr(jupyter_exec, name), name


def test_magics_and_widgets_live_under_one_namespace():
    import importlib.util

    assert importlib.util.find_spec("jupyter_exec.magics") is not None
    assert importlib.util.find_spec("jupyter_exec.widgets") is not None
    assert importlib.util.find_spec("magics") is None or "site-packages" not in str(importlib.util.find_spec("magics").origin)
