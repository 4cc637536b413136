"""``Recorder``: the output a run shows, kept in order so a cache hit can show it again."""

from __future__ import annotations

import json
from typing import Any

from jupyter_exec.runner.protocol import OutputSink

__all__ = ["Recorder"]


class Recorder:
    """An ``OutputSink`` that passes every chunk and display on to ``inner`` and keeps a copy,
    up to ``limit`` bytes; past that the run is too big to cache (``overflow``)."""

    def __init__(self, inner: OutputSink, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.chunks: list[list[Any]] = []
        self.size = 0
        self.overflow = False

    def output(self, stream: str, text: str) -> None:
        self.inner.output(stream, text)
        if stream != "info":  # about this run (a Ray starting), not what the cell printed
            self._keep([stream, text], len(text.encode("utf-8", "replace")))

    def display(self, bundle: dict[str, str]) -> None:
        self.inner.display(bundle)
        self._keep(["display", bundle], len(json.dumps(bundle)))

    def _keep(self, chunk: list[Any], size: int) -> None:
        if self.overflow:
            return
        self.size += size
        if self.size > self.limit:
            self.overflow, self.chunks = True, []
        else:
            self.chunks.append(chunk)
