"""SSTables: immutable sorted files of entries, one module per part of the trio.

- ``table_format``: the file layout (drawn there), ``Footer``, ``MetaBlock``,
  ``TableOptions`` and ``TableProperties``.
- ``table_writer``: ``TableWriter`` builds a table; ``write_table`` writes an iterable.
- ``table_reader``: ``TableReader`` opens one and reads it (``get``, ``floor``,
  ``entries``); blocks are decoded by ``block``, the filter by ``bloom``.

This module re-exports their public names, so ``from sentinel.storage.sstable import
TableReader`` keeps working; code inside ``sentinel.storage`` imports the part it uses.
"""

from __future__ import annotations

from sentinel.storage.table_format import (
    FOOTER_SIZE,
    FORMAT_VERSION,
    MAGIC,
    Footer,
    MetaBlock,
    TableOptions,
    TableProperties,
)
from sentinel.storage.table_reader import TableReader
from sentinel.storage.table_writer import TableWriter, write_table

__all__ = [
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "Footer",
    "MetaBlock",
    "TableOptions",
    "TableProperties",
    "TableReader",
    "TableWriter",
    "write_table",
]
