"""Reading a SQLite file page by page, without SQLite: what salvage uses on a file SQLite refuses.

Follows the file format (https://sqlite.org/fileformat2.html): b-tree pages, cells, varints,
records and overflow chains, plus the committed frames of a ``-wal`` file laid over the
pages they replace. Every read is bounds-checked: a torn or overwritten page yields fewer
cells, never an exception out of here. Only table b-trees are read; indexes are rebuilt by
whoever inserts the rows again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_SUFFIXES", "Cell", "PageFile"]

#: The files SQLite keeps beside a database, which belong with it wherever it goes.
JOURNAL_SUFFIXES = ("-wal", "-journal")

MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)
_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)
_TABLE_LEAF, _TABLE_INTERIOR, _INDEX_LEAF, _INDEX_INTERIOR = 13, 5, 10, 2


@dataclass(frozen=True)
class Cell:
    """One row of a table b-tree leaf: its rowid and its record's values, in column order."""

    page: int
    rowid: int
    values: tuple[Any, ...]


class PageFile:
    """A database file (and its ``-wal``, if any) read as pages."""

    def __init__(self, path: Path) -> None:
        self.data = Path(path).read_bytes()
        self.header_ok = self.data[:16] == MAGIC
        overlay, wal_page_size = _wal_frames(Path(f"{path}-wal"))
        self.page_size = self._page_size(wal_page_size)
        reserved = self.data[20] if self.header_ok and len(self.data) > 20 else 0
        self.usable = self.page_size - reserved
        self.overlay = overlay if wal_page_size == self.page_size else {}
        self.count = max(len(self.data) // self.page_size, max(self.overlay, default=0))

    def _page_size(self, wal_page_size: int) -> int:
        if self.header_ok and len(self.data) >= 100:
            size = struct.unpack(">H", self.data[16:18])[0]
            size = 65536 if size == 1 else size
            if size in _PAGE_SIZES:
                return size
        if wal_page_size in _PAGE_SIZES:
            return wal_page_size
        # The header is gone: the page size that makes the most pages look like b-tree pages.
        return max(_PAGE_SIZES, key=self._btree_pages)

    def _btree_pages(self, size: int) -> int:
        return sum(
            1
            for offset in range(size, len(self.data) - size + 1, size)
            if self.data[offset] in (_TABLE_LEAF, _TABLE_INTERIOR, _INDEX_LEAF, _INDEX_INTERIOR)
            and 0 < struct.unpack(">H", self.data[offset + 3 : offset + 5])[0] * 2 < size
        )

    def page(self, number: int) -> bytes:
        """Page ``number`` (1-based) as the last commit left it; empty past the end."""
        if number in self.overlay:
            return self.overlay[number]
        start = (number - 1) * self.page_size
        return self.data[start : start + self.page_size] if 0 < number <= self.count else b""

    def kind(self, number: int) -> int | None:
        page = self.page(number)
        offset = 100 if number == 1 else 0
        return page[offset] if len(page) > offset else None

    def freelist(self) -> set[int]:
        """Pages the header lists as free (their old rows are not current); empty if the header is gone."""
        if not self.header_ok:
            return set()
        free: set[int] = set()
        trunk = struct.unpack(">I", self.data[32:36])[0]
        while 0 < trunk <= self.count and trunk not in free:
            free.add(trunk)
            page = self.page(trunk)
            leaves = min(struct.unpack(">I", page[4:8])[0], (len(page) - 8) // 4)
            free.update(struct.unpack(f">{leaves}I", page[8 : 8 + 4 * leaves]))
            trunk = struct.unpack(">I", page[:4])[0]
        return free

    def leaves(self, root: int) -> Iterator[int]:
        """The leaf pages of the table b-tree at ``root`` that can still be reached."""
        seen: set[int] = set()
        pending = [root]
        while pending:
            number = pending.pop()
            if number in seen or not 0 < number <= self.count:
                continue
            seen.add(number)
            kind = self.kind(number)
            if kind == _TABLE_LEAF:
                yield number
            elif kind == _TABLE_INTERIOR:
                pending.extend(self._children(number))

    def _children(self, number: int) -> list[int]:
        page, header = self.page(number), 100 if number == 1 else 0
        children = [struct.unpack(">I", page[header + 8 : header + 12])[0]]
        for pointer in self._pointers(page, header, 12):
            if pointer + 4 <= len(page):
                children.append(struct.unpack(">I", page[pointer : pointer + 4])[0])
        return children

    def table_leaves(self) -> Iterator[int]:
        """Every page that looks like a table leaf, reachable or not."""
        return (n for n in range(1, self.count + 1) if self.kind(n) == _TABLE_LEAF)

    def cells(self, number: int) -> Iterator[Cell]:
        """The rows on leaf page ``number`` that decode; a damaged cell is skipped."""
        page, header = self.page(number), 100 if number == 1 else 0
        for pointer in self._pointers(page, header, 8):
            try:
                cell = self._cell(number, page, pointer)
            except (IndexError, struct.error, ValueError):
                continue
            if cell is not None:
                yield cell

    def _pointers(self, page: bytes, header: int, size: int) -> list[int]:
        if len(page) < header + size:
            return []
        count = struct.unpack(">H", page[header + 3 : header + 5])[0]
        start = header + size
        if start + 2 * count > len(page):
            return []
        return [p for p in struct.unpack(f">{count}H", page[start : start + 2 * count]) if start < p < len(page)]

    def _cell(self, number: int, page: bytes, offset: int) -> Cell | None:
        length, offset = _varint(page, offset)
        rowid, offset = _varint(page, offset)
        if rowid >= 1 << 63:
            rowid -= 1 << 64
        local = self._local_size(length)
        payload = page[offset : offset + local]
        if len(payload) < local:
            return None
        if local < length:
            payload += self._overflow(struct.unpack(">I", page[offset + local : offset + local + 4])[0], length - local)
            if len(payload) < length:
                return None
        values = _record(payload)
        return None if values is None else Cell(number, rowid, values)

    def _local_size(self, length: int) -> int:
        usable = self.usable
        most = usable - 35
        if length <= most:
            return length
        least = (usable - 12) * 32 // 255 - 23
        local = least + (length - least) % (usable - 4)
        return local if local <= most else least

    def _overflow(self, number: int, wanted: int) -> bytes:
        chunks, seen = [], set()
        while wanted > 0 and 0 < number <= self.count and number not in seen:
            seen.add(number)
            page = self.page(number)
            chunk = page[4 : 4 + min(wanted, self.usable - 4)]
            chunks.append(chunk)
            wanted -= len(chunk)
            number = struct.unpack(">I", page[:4])[0]
        return b"".join(chunks)


def _wal_frames(path: Path) -> tuple[dict[int, bytes], int]:
    """The pages of the last committed transaction in a WAL file, by page number, and its page size."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}, 0
    if len(data) < 32 or struct.unpack(">I", data[:4])[0] not in _WAL_MAGICS:
        return {}, 0
    size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    committed: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    offset = 32
    while offset + 24 + size <= len(data):
        frame = data[offset : offset + 24]
        if frame[8:16] != salts:
            break  # a frame of an older generation: the log ends here
        number, commit = struct.unpack(">II", frame[:8])
        pending[number] = data[offset + 24 : offset + 24 + size]
        if commit:
            committed.update(pending)
            pending = {}
        offset += 24 + size
    return committed, size


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        byte = data[offset + i]
        if i == 8:
            return (value << 8) | byte, offset + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, offset + i + 1
    raise ValueError("varint")  # not reached


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes) -> tuple[Any, ...] | None:
    """A record's values; None if it does not decode (text that is not UTF-8, types out of range)."""
    header_size, offset = _varint(payload, 0)
    if not 0 < header_size <= len(payload):
        return None
    types = []
    while offset < header_size:
        if payload[offset] < 0x80:  # nearly every serial type fits one byte
            types.append(payload[offset])
            offset += 1
        else:
            kind, offset = _varint(payload, offset)
            types.append(kind)
    values: list[Any] = []
    body = header_size
    for kind in types:
        if kind in (10, 11):
            return None
        if kind == 0:
            values.append(None)
        elif kind in (8, 9):
            values.append(kind - 8)
        elif kind in _INT_SIZES:
            size = _INT_SIZES[kind]
            values.append(int.from_bytes(payload[body : body + size], "big", signed=True))
            body += size
        elif kind == 7:
            values.append(struct.unpack(">d", payload[body : body + 8])[0])
            body += 8
        else:
            size = (kind - 12) // 2
            raw = payload[body : body + size]
            values.append(raw.decode("utf-8") if kind % 2 else raw)
            body += size
        if body > len(payload):
            return None
    return tuple(values) if body == len(payload) else None
