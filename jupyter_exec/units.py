"""Sizes, durations and counts: read as users type them, written back the same way.

One vocabulary for magics, config, policy files and messages. Sizes take ``512m``,
``2g``, ``1.5GiB``, ``100k`` or a byte count (Docker's convention: a bare ``k``/``m``/``g``
is binary, ``MB``/``GB`` decimal); durations take ``30``, ``30s``, ``5m``, ``1h30m``,
``250ms``. Every parser raises ``SpecError`` naming the option and showing a good value.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from .errors import SpecError

__all__ = [
    "format_bytes",
    "format_duration",
    "format_elapsed",
    "format_size",
    "parse_count",
    "parse_duration",
    "parse_number",
    "parse_size",
]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: str | int | float, option: str = "size") -> int:
    """Bytes from ``512m`` / ``2g`` / ``1.5GiB`` / ``100kb`` / ``1048576``."""
    if isinstance(value, bool):
        raise SpecError(f"{option}: expected a size like 512m or 2g, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SpecError(f"{option}: expected a size like 512m or 2g, got {value!r}")
        number, unit = Decimal(repr(value)), ""
    else:
        match = _SIZE_RE.match(value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise SpecError(f"{option}: cannot read {value!r} as a size; write it like 512m, 2g or 1.5GiB")
        number, unit = Decimal(match.group(1)), match.group(2).lower()
    size = int(number * _SIZE_UNITS[unit])  # Decimal: exact for any size a user can type
    if size <= 0:
        raise SpecError(f"{option}: a size must be positive, got {value!r}")
    return size


def parse_duration(value: str | int | float, option: str = "duration") -> float:
    """Seconds from ``30`` / ``30s`` / ``5m`` / ``1h30m`` / ``250ms``."""
    if isinstance(value, bool):
        raise SpecError(f"{option}: expected a duration like 30s or 5m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART_RE.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
                raise SpecError(
                    f"{option}: cannot read {value!r} as a duration; write it like 30, 30s, 5m or 1h30m"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{option}: a duration must be positive, got {value!r}")
    return seconds


def parse_number(value: object, option: str, *, allow_zero: bool = False, example: str = "1 or 0.5") -> float:
    """A finite number, more than 0 (or 0 and more with ``allow_zero``)."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpecError(f"{option}: expected a number like {example}, got {value!r}") from None
    if not math.isfinite(number):
        raise SpecError(f"{option}: expected a number like {example}, got {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        raise SpecError(f"{option}: must be {'0 or more' if allow_zero else 'more than 0'}, got {value!r}")
    return number


def parse_count(value: object, option: str, *, allow_zero: bool = False, example: str = "64") -> int:
    """A whole number, at least 1 (or 0 and more with ``allow_zero``)."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)  # type: ignore[arg-type]
        if not number.is_integer():
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{option}: expected a whole number like {example}, got {value!r}") from None
    least = 0 if allow_zero else 1
    if number < least:
        raise SpecError(f"{option}: must be at least {least}, got {value!r}")
    return int(number)


def format_size(size: float) -> str:
    """Bytes as a user would type them: 536870912 -> ``512m``, 1.5 GiB -> ``1.5g``."""
    for unit, factor in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size >= factor and (size * 100) % factor == 0:
            return f"{size / factor:g}{unit}"
    return f"{size:g}"


def format_duration(seconds: float) -> str:
    """Seconds as a user would type them: 300 -> ``5m``, 3600 -> ``1h``, 45 -> ``45s``."""
    for unit, factor in (("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"


def format_elapsed(seconds: float) -> str:
    """A duration for reading: 0.0123 -> ``12 ms``, 4.56 -> ``4.6 s``, 125 -> ``2 min 5 s``, 7260 -> ``2 h 1 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def format_bytes(size: float | None) -> str:
    """Bytes for reading: 1536 -> ``1.5 KiB``; None -> ``-``."""
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
