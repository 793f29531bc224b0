"""Read one partition back whole through the gRPC API, for the soaks' checks."""

from __future__ import annotations

from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.record import decode_records, iter_batches


def read_partition(
    stub: pb_grpc.SentinelStub, topic: str, partition: int
) -> tuple[dict[int, bytes], int]:
    """Every record of one partition (offset -> value) from its log start to its end,
    and the high watermark the last answer gave."""
    stored: dict[int, bytes] = {}
    offset, end = 0, 0
    for _ in range(100_000):  # bounded: each fetch moves on by at least one batch
        answer = stub.Fetch(
            pb.FetchRequest(topic=topic, partition=partition, offset=offset, max_bytes=4 << 20),
            timeout=10,
        )
        end = answer.high_watermark
        if offset == 0:
            offset = answer.log_start_offset
        for view in iter_batches(answer.record_batches):
            for record in decode_records(view):
                stored[record.offset] = record.value or b""
        if answer.next_offset <= offset or answer.next_offset >= answer.high_watermark:
            break
        offset = answer.next_offset
    return stored, end
