"""The cache of identical runs (``--cache``, ``map(..., cache=True)``): keys, entries, eviction."""

from __future__ import annotations

from .keys import NotCacheable, digest, mount_digest, run_key
from .recorder import Recorder
from .store import CacheHit, RunCache

__all__ = ["CacheHit", "NotCacheable", "Recorder", "RunCache", "digest", "mount_digest", "run_key"]
