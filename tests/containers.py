"""What the container tests ask an engine: our containers by label, and that none of a finished run is left."""

from __future__ import annotations

import io
import time
from typing import Any

from jupyter_exec.backends.container.slot import gone


def containers(client: Any, **labels: str) -> list[dict[str, Any]]:
    """Containers with these ``jupyter-exec.*`` labels (``owner_pid=...``), as the engine lists them."""
    filters = [f"jupyter-exec.{k.replace('_', '-')}={v}" for k, v in labels.items()] or ["jupyter-exec.run"]
    return client.api.containers(all=True, filters={"label": filters})


def assert_no_run_containers(client: Any, owner_pid: int, timeout: float = 10) -> None:
    """Only idle pool containers (run label ``pool``) of the kernel ``owner_pid`` may remain once
    its runs are over (the engine may be running other kernels' cells meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        mine = containers(client, owner_pid=str(owner_pid))
        left = [c["Names"] for c in mine if c["Labels"].get("jupyter-exec.run") != "pool"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"containers of finished runs remain: {left}"


def kill_from_outside(client: Any, container: str) -> None:
    """SIGKILL ``container`` through its engine, as someone outside would. The kill is delivered
    even where the engine then answers an error: Podman waits for the killed container and may
    find its auto-removal was quicker ("no such container"); gVisor's sandbox may take longer to
    die than Docker waits before it finds the container's first process a zombie."""
    import docker

    try:
        client.api.kill(container, "SIGKILL")
    except docker.errors.APIError as error:
        if not gone(error) and "is zombie" not in str(error):
            raise


def derived_image(client: Any, tag: str, *lines: str) -> str:
    """``tag``, built from the sandbox base with the Dockerfile ``lines`` run as root (no registry
    needed); remove it when done."""
    dockerfile = "\n".join(("FROM jupyter-exec/base", "USER root", *lines, "USER 65534:65534"))
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag
