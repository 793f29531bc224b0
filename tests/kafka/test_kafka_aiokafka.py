"""Cross-check with aiokafka's own protocol classes (an independent implementation).

For every (API, version) both aiokafka 0.14 and we have:
- requests: a generated value, encoded by aiokafka's request struct, decodes with ours
  to the same value;
- responses: a generated value, encoded by ours, decodes with aiokafka's response
  struct to the same fields.
Fields are matched by position (aiokafka names some fields differently); aiokafka's
``TaggedFields`` slots are skipped, as are our tagged fields (aiokafka has none here).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest
from aiokafka.protocol.api import RequestStruct
from aiokafka.protocol.types import Array, Schema, TaggedFields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_values import message_values

from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.schema import Struct

AIOKAFKA_WRONG = {
    # aiokafka's ListOffsets v4/v5 request writes current_leader_epoch as int64 (Kafka:
    # int32) and aiokafka itself lists them as "not yet supported".
    (2, 4), (2, 5),
}

_MODULES = ("metadata", "produce", "fetch", "admin", "group", "commit", "offset",
            "coordination", "transaction")


def _aiokafka_requests() -> list[tuple[int, int, type[RequestStruct]]]:
    found = []
    for name in _MODULES:
        module = importlib.import_module(f"aiokafka.protocol.{name}")
        for cls_name, cls in vars(module).items():
            if not (inspect.isclass(cls) and issubclass(cls, RequestStruct)
                    and cls is not RequestStruct and isinstance(cls.__dict__.get("API_KEY"), int)):
                continue
            match = re.search(r"_v(\d+)$", cls_name)
            if match is None or int(match.group(1)) != cls.API_VERSION:
                continue  # e.g. ListGroupsRequest_v2 claims version 1
            if (cls.API_KEY, cls.API_VERSION) in AIOKAFKA_WRONG:
                continue
            message = REQUESTS.get(cls.API_KEY)
            if message is not None and message.supports(cls.API_VERSION):
                found.append((cls.API_KEY, cls.API_VERSION, cls))
    return sorted(found, key=lambda t: (t[0], t[1]))


CASES = _aiokafka_requests()
IDS = [f"{c.__name__}" for _, _, c in CASES]


def _ours(s: Struct, version: int, flexible: bool) -> list[Any]:
    return [f for f in s.fields
            if f.present(version) and not (flexible and f.tag is not None)]


def to_positional(value: Any, s: Struct, schema: Any, version: int, flexible: bool) -> Any:
    """Our value as the nested tuple aiokafka's schema encodes and decodes."""
    if not isinstance(schema, Schema):  # aiokafka flattens a one-field struct to its value
        (only,) = _ours(s, version, flexible)
        return getattr(value, only.name)
    ours = iter(_ours(s, version, flexible))
    out = _fill(value, ours, schema, version, flexible)
    assert next(ours, None) is None, f"aiokafka's {s.cls.__name__} has fewer fields"
    return out


def _fill(value: Any, ours: Any, schema: Schema, version: int, flexible: bool) -> tuple:
    out: list[Any] = []
    for kind in schema.fields:
        if isinstance(kind, TaggedFields) or kind is TaggedFields:  # DeleteRecords v2: the class
            out.append({})
            continue
        if isinstance(kind, Schema):  # aiokafka groups some of our fields in a sub-tuple
            out.append(_fill(value, ours, kind, version, flexible))
            continue
        f = next(ours)
        v = getattr(value, f.name)
        if f.is_array and v is not None:
            assert isinstance(kind, Array), (f.name, kind)
            if f.struct is not None:
                v = [to_positional(x, f.struct, kind.array_of, version, flexible) for x in v]
            else:
                v = list(v)
        out.append(v)
    return tuple(out)


def from_positional(data: Any, s: Struct, schema: Any, version: int, flexible: bool) -> Any:
    """aiokafka's decoded tuple as our value class."""
    if not isinstance(schema, Schema):
        (only,) = _ours(s, version, flexible)
        return s.cls(**{only.name: data})
    values: dict[str, Any] = {}
    _collect(data, iter(_ours(s, version, flexible)), schema, version, flexible, values)
    return s.cls(**values)


def _collect(data: tuple, ours: Any, schema: Schema, version: int, flexible: bool,
             values: dict[str, Any]) -> None:
    for kind, v in zip(schema.fields, data, strict=True):
        if isinstance(kind, TaggedFields) or kind is TaggedFields:  # DeleteRecords v2: the class
            continue
        if isinstance(kind, Schema):
            _collect(v, ours, kind, version, flexible, values)
            continue
        f = next(ours)
        if f.is_array and v is not None:
            if f.struct is not None:
                v = tuple(from_positional(x, f.struct, kind.array_of, version, flexible)
                          for x in v)
            else:
                v = tuple(v)
        values[f.name] = v


SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def test_aiokafka_covers_a_useful_set() -> None:
    keys = {k for k, _, _ in CASES}
    assert {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 32, 37} <= keys


@pytest.mark.parametrize(("key", "version", "cls"), CASES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_aiokafka_request_decodes_with_ours(key: int, version: int, cls: Any, data: Any) -> None:
    message = REQUESTS[key]
    flexible = message.flexible(version)
    assert flexible == cls.FLEXIBLE_VERSION
    value = data.draw(message_values(message, version))
    encoded = cls(*to_positional(value, message.body, cls.SCHEMA, version, flexible)).encode()
    assert serde.decode(message, version, encoded) == value


@pytest.mark.parametrize(("key", "version", "cls"), CASES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_our_response_decodes_with_aiokafka(key: int, version: int, cls: Any, data: Any) -> None:
    message = RESPONSES[key]
    flexible = message.flexible(version)
    value = data.draw(message_values(message, version))
    encoded = serde.encode(message, version, value)
    response_cls = _response_class(cls)
    decoded = response_cls.SCHEMA.decode(_stream(encoded))
    assert from_positional(decoded, message.body, response_cls.SCHEMA, version, flexible) == value


def _response_class(cls: Any) -> Any:
    """The response struct of the same version (aiokafka's DescribeGroupsRequest_v3
    names Response_v2 as its RESPONSE_TYPE)."""
    module = importlib.import_module(cls.__module__)
    same = getattr(module, cls.__name__.replace("Request", "Response"), None)
    return same if same is not None else cls.RESPONSE_TYPE


def _stream(data: bytes) -> Any:
    from io import BytesIO
    return BytesIO(data)
