"""The cache of identical runs (``--cache``, ``map(..., cache=True)``): keys, entries, eviction."""

from __future__ import annotations

from .entries import CacheEntries, CacheHit
from .keys import NotCacheable, digest, mount_digest, run_key
from .recorder import Recorder

__all__ = ["CacheEntries", "CacheHit", "NotCacheable", "Recorder", "digest", "mount_digest", "run_key"]
