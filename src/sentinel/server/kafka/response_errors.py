"""A Kafka response's error code: the first one it carries (what the request metrics
count), and the response a request gets when its handler fails.

A failed handler is answered, not dropped, as Kafka's broker does (each request's
``getErrorResponse``): the error goes in the response's top-level ``error_code`` where
the version has one, and in every item the request named (each partition of a produce,
each topic of a metadata request, each group of a describe), so that a client sees the
error where it looks for it. Only a produce with acks 0, which has no response, is
answered by closing the connection, as Kafka does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from sentinel.protocol.kafka.messages import RESPONSES

__all__ = ["error_response", "first_error_code"]

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A response class's field names, once per class (``fields()`` builds them anew)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def first_error_code(value: Any) -> int:
    """The first non-zero ``error_code`` of a response, depth first (0: none)."""
    code = getattr(value, "error_code", 0)
    if code:
        return int(code)
    for name in _field_names(type(value)):
        items = getattr(value, name)
        if isinstance(items, tuple) and items and is_dataclass(items[0]):
            for item in items:
                code = first_error_code(item)
                if code:
                    return code
    return 0


@dataclass(frozen=True, slots=True)
class _Mirror:
    """How one list of a request's items becomes the response's list of results.

    ``keys`` copy each request item's naming fields to its result (a request field of
    ``""`` is the item itself: a list of plain names or indexes); ``child`` mirrors a
    nested list (topics, then their partitions); ``blank`` are the result's fields
    that an error answer sets to "none" (-1 offsets), as Kafka's do. A result class
    with ``error_code`` / ``error_message`` fields gets the error."""

    request_list: str
    response_list: str
    keys: tuple[tuple[str, str], ...]
    child: _Mirror | None = None
    blank: tuple[tuple[str, Any], ...] = ()


def _topics(request_list: str, response_list: str, name: tuple[str, str],
            partitions: _Mirror) -> _Mirror:
    return _Mirror(request_list, response_list, (name,), partitions)


_NO_OFFSET = -1

# By API key: the request's lists the error is mirrored into (the APIs whose response
# has no top-level error code, and those whose top-level code some versions lack).
_MIRRORS: dict[int, tuple[_Mirror, ...]] = {
    0: (_topics("topic_data", "responses", ("name", "name"), _Mirror(
        "partition_data", "partition_responses", (("index", "index"),),
        blank=(("base_offset", _NO_OFFSET),))),),
    1: (_topics("topics", "responses", ("topic", "topic"), _Mirror(
        "partitions", "partitions", (("partition", "partition_index"),),
        blank=(("high_watermark", _NO_OFFSET), ("last_stable_offset", _NO_OFFSET),
               ("log_start_offset", _NO_OFFSET), ("records", None)))),),
    2: (_topics("topics", "topics", ("name", "name"), _Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),),
        blank=(("timestamp", _NO_OFFSET), ("offset", _NO_OFFSET)))),),
    3: (_Mirror("topics", "topics", (("name", "name"), ("topic_id", "topic_id"))),),
    8: (_topics("topics", "topics", ("name", "name"), _Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),))),),
    9: (_Mirror("groups", "groups", (("group_id", "group_id"),)),
        _topics("topics", "topics", ("name", "name"), _Mirror(
            "partition_indexes", "partitions", (("", "partition_index"),),
            blank=(("committed_offset", _NO_OFFSET),)))),
    15: (_Mirror("groups", "groups", (("", "group_id"),)),),
    19: (_Mirror("topics", "topics", (("name", "name"),)),),
    20: (_Mirror("topic_names", "responses", (("", "name"),)),),
    21: (_topics("topics", "topics", ("name", "name"), _Mirror(
        "partitions", "partitions", (("partition_index", "partition_index"),),
        blank=(("low_watermark", _NO_OFFSET),))),),
    23: (_topics("topics", "topics", ("topic", "topic"), _Mirror(
        "partitions", "partitions", (("partition", "partition"),),
        blank=(("leader_epoch", -1), ("end_offset", _NO_OFFSET)))),),
    32: (_Mirror("resources", "results", (
        ("resource_type", "resource_type"), ("resource_name", "resource_name"))),),
    33: (_Mirror("resources", "responses", (
        ("resource_type", "resource_type"), ("resource_name", "resource_name"))),),
    37: (_Mirror("topics", "results", (("name", "name"),)),),
    42: (_Mirror("groups_names", "results", (("", "group_id"),)),),
    44: (_Mirror("resources", "responses", (
        ("resource_type", "resource_type"), ("resource_name", "resource_name"))),),
}


def _with_error(cls: type, code: int, message: str | None) -> dict[str, Any]:
    names = _field_names(cls)
    values: dict[str, Any] = {}
    if "error_code" in names:
        values["error_code"] = code
    if "error_message" in names:
        values["error_message"] = message
    return values


def _mirror(mirror: _Mirror, request: Any, result_cls: type, code: int,
            message: str | None) -> tuple[Any, ...]:
    items = getattr(request, mirror.request_list, None) or ()
    results = []
    for item in items:
        values = _with_error(result_cls, code, message)
        for source, target in mirror.keys:
            values[target] = item if not source else getattr(item, source)
        values.update(mirror.blank)
        if mirror.child is not None:
            values[mirror.child.response_list] = _mirror(
                mirror.child, item, _item_class(result_cls, mirror.child.response_list),
                code, message)
        results.append(result_cls(**values))
    return tuple(results)


def _struct_items() -> dict[tuple[type, str], type]:
    """(value class, list field) -> item value class, for every response schema."""
    found: dict[tuple[type, str], type] = {}

    def walk(struct: Any) -> None:
        for row in struct.fields:
            if row.struct is not None:
                found[(struct.cls, row.name)] = row.struct.cls
                walk(row.struct)

    for message in RESPONSES.values():
        walk(message.body)
    return found


_ITEM_CLASSES = _struct_items()


def _item_class(cls: type, list_name: str) -> type:
    """The value class of the items of ``cls``'s list field ``list_name``."""
    return _ITEM_CLASSES[(cls, list_name)]


def error_response(api_key: int, request: Any, code: int, message: str | None = None) -> Any:
    """The response to ``request`` that carries ``code`` (and ``message`` where the
    response has room for one) at its top level and in every item the request named.

    Fields a version does not have are dropped by the encoder, so one value serves
    every version: a Fetch v4 gets its error per partition, v7 at the top as well."""
    cls = RESPONSES[api_key].body.cls
    values = _with_error(cls, code, message)
    for mirror in _MIRRORS.get(api_key, ()):
        values[mirror.response_list] = _mirror(
            mirror, request, _item_class(cls, mirror.response_list), code, message)
    return cls(**values)
