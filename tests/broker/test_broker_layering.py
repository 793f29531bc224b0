"""Layering: the log does not know the broker, the client does not know the broker, and
every error carries its Kafka code and its reason (both doors map by them)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import sentinel
from sentinel import errors
from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import ErrorCode
from sentinel.broker.limits import PolicyViolationError
from sentinel.broker.request_budget import RequestThrottledError
from sentinel.broker.topics import (
    InvalidReplicationFactorError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sentinel.broker.validation import InvalidRequiredAcksError
from sentinel.log.config import InvalidConfigError, InvalidPartitionsError, InvalidTopicError
from sentinel.log.errors import (
    InvalidProducerEpochError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
)
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.server.errors import refusal_for

SRC = pathlib.Path(sentinel.__file__).parent


def _imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((str(path.relative_to(SRC)), node.module))
            elif isinstance(node, ast.Import):
                found.extend((str(path.relative_to(SRC)), a.name) for a in node.names)
    return found


@pytest.mark.parametrize("package", ["log", "client", "storage", "record"])
def test_lower_layers_do_not_import_the_broker(package: str) -> None:
    offending = [(f, m) for f, m in _imports(package) if m.startswith("sentinel.broker")]
    assert offending == []


def test_the_log_does_not_import_the_server() -> None:
    assert [(f, m) for f, m in _imports("log") if m.startswith("sentinel.server")] == []


CASES: list[tuple[BaseException, int, str]] = [
    (UnknownTopicOrPartitionError("t"), 3, "UNKNOWN_TOPIC_OR_PARTITION"),
    (TopicAlreadyExistsError("t"), 36, "TOPIC_ALREADY_EXISTS"),
    (InvalidReplicationFactorError("r"), 38, "INVALID_REPLICATION_FACTOR"),
    (InvalidTopicError("t"), 17, "INVALID_TOPIC"),
    (InvalidConfigError("c"), 40, "INVALID_CONFIG"),
    (InvalidPartitionsError("p"), 37, "INVALID_PARTITIONS"),
    (PolicyViolationError("p"), 44, "POLICY_VIOLATION"),
    (RequestThrottledError("q"), 89, "THROTTLING_QUOTA_EXCEEDED"),
    (InvalidRequiredAcksError("a"), 21, "INVALID_REQUIRED_ACKS"),
    (OffsetOutOfRangeError(9, 0, 3), 1, "OFFSET_OUT_OF_RANGE"),
    (OutOfOrderSequenceError(1, 2, 3), 45, "OUT_OF_ORDER_SEQUENCE"),
    (InvalidProducerEpochError(1, 2, 1), 47, "INVALID_PRODUCER_EPOCH"),
    (errors.StorageUnavailableError("full", "t-0"), 56, "KAFKA_STORAGE_ERROR"),
    (errors.CorruptionError("f", "block 1", "crc"), 2, "CORRUPT_MESSAGE"),
    (errors.CorruptRecordError("crc"), 2, "CORRUPT_MESSAGE"),
    (errors.RecordBatchTooLargeError("big"), 10, "MESSAGE_TOO_LARGE"),
    (errors.InvalidRecordError("bad"), 87, "INVALID_RECORD"),
    (errors.UnsupportedCompressionError("zz"), 76, "INVALID_RECORD"),
    (errors.NotLeaderError("no", "2"), 6, "NOT_LEADER_OR_FOLLOWER"),
    (errors.InvalidArgumentError("x"), 42, "INVALID_REQUEST"),
    (GroupError(ErrorCode.ILLEGAL_GENERATION), 22, "ILLEGAL_GENERATION"),
    (GroupError(ErrorCode.REBALANCE_IN_PROGRESS), 27, "REBALANCE_IN_PROGRESS"),
]


@pytest.mark.parametrize(("exc", "code", "reason"), CASES, ids=lambda v: str(v)[:30])
def test_every_error_carries_its_kafka_code_and_reason(
    exc: BaseException, code: int, reason: str
) -> None:
    assert errors.kafka_code_of(exc) == code
    refusal = refusal_for(exc)
    assert refusal is not None and refusal.reason == reason


def test_reasons_are_names_of_the_proto_error_codes_with_kafkas_numbers() -> None:
    names = set(pb.ErrorCode.keys())
    for _exc, code, reason in CASES:
        if reason in names and code != 76:
            assert pb.ErrorCode.Value(reason) == code, reason


def test_bugs_and_closed_objects_stay_internal() -> None:
    assert refusal_for(RuntimeError("bug")) is None
    assert refusal_for(errors.ClosedError("closed")) is None
    assert errors.kafka_code_of(RuntimeError("bug")) == -1
