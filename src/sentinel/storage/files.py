"""Names of the engine's files, and the metadata of a table.

File names carry a 20-digit number so that they sort numerically as strings:
``00000000000000000007.sst`` (a table), ``00000000000000000003.wal`` (a WAL segment),
``MANIFEST-00000000000000000002`` (the manifest log), ``CURRENT`` (names the live
manifest), ``LOCK`` (held by the open engine), ``*.tmp`` (never live; removed on open).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

TABLE_SUFFIX = ".sst"
WAL_SUFFIX = ".wal"
MANIFEST_PREFIX = "MANIFEST-"
CURRENT_NAME = "CURRENT"
LOCK_NAME = "LOCK"
TEMP_SUFFIX = ".tmp"


def table_name(number: int) -> str:
    return f"{number:020d}{TABLE_SUFFIX}"


def wal_name(number: int) -> str:
    return f"{number:020d}{WAL_SUFFIX}"


def manifest_name(number: int) -> str:
    return f"{MANIFEST_PREFIX}{number:020d}"


def join(directory: str, name: str) -> str:
    return posixpath.join(directory, name)


def parse_number(name: str, suffix: str) -> int | None:
    """The number in ``<20 digits><suffix>``, or None if the name is not of that form."""
    if not name.endswith(suffix):
        return None
    stem = name[: len(name) - len(suffix)]
    if len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True, slots=True)
class TableMeta:
    """What the manifest records about one SSTable."""

    file_number: int
    size: int
    entry_count: int
    min_key: bytes
    max_key: bytes

    def overlaps(self, start: bytes, end_inclusive: bytes) -> bool:
        return not (self.max_key < start or self.min_key > end_inclusive)
