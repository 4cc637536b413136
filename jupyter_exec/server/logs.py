"""A run's log, read a piece at a time from a byte offset, so the side panel can tail it."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["read_piece"]


def read_piece(path: str | None, offset: int, max_bytes: int, *, finished: bool, tail: bool = False) -> dict[str, Any]:
    """Up to ``max_bytes`` of the log at ``path`` from byte ``offset`` (``tail``: the last
    ``max_bytes``, for a first look at a long log), as text.

    A piece starts and ends on whole UTF-8 characters: while the run goes on, a character
    it is still writing is left for the next piece, so pieces joined are the log;
    ``next_offset`` is where to ask next. A run that wrote nothing has no log file: an
    empty piece.
    """
    data, size, start = b"", 0, 0
    if path:
        try:
            with open(path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                start = max(size - max_bytes, 0) if tail else min(offset, size)
                log.seek(start)
                data = log.read(max_bytes)
        except FileNotFoundError:
            pass
    while data and data[0] & 0xC0 == 0x80:  # begun inside a character: start at the next one
        data, start = data[1:], start + 1
    at_end = start + len(data) >= size
    keep = len(data) if finished and at_end else _whole_characters(data)
    return {
        "offset": start,
        "next_offset": start + keep,
        "size": size,
        "text": data[:keep].decode("utf-8", errors="replace"),
    }


def _whole_characters(data: bytes) -> int:
    """How many leading bytes of ``data`` end on a UTF-8 character boundary."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        needed = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
        return len(data) if back >= needed else len(data) - back
    return len(data)
