"""What makes two runs identical, for the cache of identical runs.

A run's key is a sha256 over everything that decides its result: the code; each ``--in``
value's content (the pickled bytes that travel); the names it brings back and whether it
may pickle them (``--trust``); the runtime env (its content hash, and its env vars); what
the backend runs it on (``ExecutorBackend.identity``: the Python build, the image's digest,
the runtime); the limits in force (defaults included); the ``--env`` values; the backend's
own options; and each read-only mount's content (or, with ``--cache-mounts mtime``, each
file's size and modification time). A run that could depend on something outside all of
these is not cacheable, and ``NotCacheable`` says why: a read-write mount (the run may
write there, and a replay would not), and a ``--network`` run unless ``--cache-network``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jupyter_exec.envs.hashing import file_digest
from jupyter_exec.runner.codec import FORMAT
from jupyter_exec.spec import RunSpec

__all__ = ["NotCacheable", "digest", "mount_digest", "run_key"]


class NotCacheable(Exception):
    """This run cannot be served from the cache, for the reason given (it runs as usual)."""


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def mount_digest(source: Path, mode: str) -> str:
    """A mounted file or tree: every file's relative path with its content (``content``) or its
    size and modification time (``mtime``)."""
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    summary = hashlib.sha256()
    for path in paths:
        summary.update(os.fsencode(path.relative_to(source) if path != source else path.name) + b"\0")
        if mode == "content":
            summary.update(file_digest(path).encode())
        else:
            stat = path.stat()
            summary.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return summary.hexdigest()


def run_key(*, code: str, inputs: str | None, spec: RunSpec, identity: dict[str, Any], env: str | None) -> str:
    """The key of a run of ``code`` with packed ``inputs`` as ``spec`` says (limits already
    merged), on a backend of ``identity``, in the runtime env of hash ``env``."""
    request = spec.cache
    assert request is not None, "only a run with --cache has a key"
    if spec.limits.network and not request.network:
        raise NotCacheable("a --network run can depend on what it reaches; add --cache-network to cache it anyway")
    mounts = []
    for mount in spec.mounts:
        if not mount.read_only:
            raise NotCacheable(f"--mount {mount.source}:rw: the run may write there, which a replay would not do")
        mounts.append([str(mount.source), mount.target, mount_digest(mount.source, request.mounts)])
    document = {
        "code": code,
        "inputs": digest(inputs) if inputs else None,
        "outputs": list(spec.outputs),
        "trust": spec.trust,
        "env": env,
        "env_vars": dict(sorted(spec.env.items())),
        "identity": identity,
        "limits": spec.limits.as_dict(),
        "mounts": mounts,
        "placement": spec.placement.describe() if spec.placement else None,
        "values": FORMAT,  # entries kept in an older form of the values are not read back
    }
    return digest(json.dumps(document, sort_keys=True, default=str))
