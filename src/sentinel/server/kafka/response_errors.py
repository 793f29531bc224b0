"""A Kafka response's error code: the first one it carries (what the request metrics
count), and the response that carries one at its top level (a handler that raised a
``SentinelError``)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
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


def error_response(api_key: int, code: int) -> Any | None:
    """The API's response carrying ``code`` at its top level, or None if it has no
    top-level ``error_code`` (its errors are per topic or partition)."""
    cls = RESPONSES[api_key].body.cls
    if "error_code" not in {f.name for f in fields(cls)}:
        return None
    return cls(error_code=code)
