"""Kafka RecordBatch v2: the batch format (``batch``), writing (``builder``), reading
(``reader``), the produced records' framing walk (``framing``) and compression codecs
(``compression``)."""

from sentinel.record.batch import (
    HEADER_SIZE,
    MAGIC,
    BatchHeader,
    TimestampType,
    iter_batches,
    parse_header,
    stamp_batch,
    stamped,
    validate_batch,
)
from sentinel.record.builder import BatchBuilder, Header, RecordInput, build_batch
from sentinel.record.compression import Compression, compress, decompress
from sentinel.record.framing import check_records
from sentinel.record.reader import (
    DEFAULT_MAX_RECORDS,
    DEFAULT_MAX_RECORDS_BYTES,
    Record,
    decode_records,
)

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_MAX_RECORDS_BYTES",
    "HEADER_SIZE",
    "MAGIC",
    "BatchBuilder",
    "BatchHeader",
    "Compression",
    "Header",
    "Record",
    "RecordInput",
    "TimestampType",
    "build_batch",
    "check_records",
    "compress",
    "decode_records",
    "decompress",
    "iter_batches",
    "parse_header",
    "stamp_batch",
    "stamped",
    "validate_batch",
]
