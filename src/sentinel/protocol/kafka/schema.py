"""Schema rows: Kafka's JSON message definitions written as data.

A message is a top-level ``Struct`` plus the versions it exists in and the first
flexible version. A struct is a value class plus ``F`` rows, one per field::

    F("topics", "[]Topic", "0-12", nullable="1-12", struct=_TOPIC)
      name      type        versions  nullable versions   nested struct (for struct types)
    F("cluster_id", "string", "2-12", nullable="2-12")
    F("supported_features", "[]SupportedFeatureKey", "3-4", tag=0, struct=...)

Types are Kafka's: ``int8 int16 int32 int64 uint16 float64 bool string bytes records
uuid``, a struct name, or ``[]`` + any of those for an array. A field with ``tag`` is
a tagged field in flexible versions (it is written only when it differs from the
default). Versions are inclusive ranges ``"lo-hi"``; a field absent from a version
takes its value class default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

__all__ = ["PRIMITIVES", "ZERO_UUID", "F", "Message", "Struct", "parse_range"]

ZERO_UUID = UUID(int=0)

PRIMITIVES = frozenset(
    {"int8", "int16", "int32", "int64", "uint16", "float64", "bool", "string", "bytes",
     "records", "uuid"}
)


def parse_range(text: str) -> tuple[int, int]:
    """``"3-9"`` -> ``(3, 9)``; ``""`` -> an empty range."""
    if not text:
        return (0, -1)
    lo, _, hi = text.partition("-")
    return (int(lo), int(hi or lo))


@dataclass(frozen=True, slots=True)
class F:
    """One field row. ``kind`` is the element type without ``[]``."""

    name: str
    type: str
    versions: str
    nullable: str = ""
    tag: int | None = None
    struct: Struct | None = None
    lo: int = field(init=False)
    hi: int = field(init=False)
    null_lo: int = field(init=False)
    null_hi: int = field(init=False)
    is_array: bool = field(init=False)
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        lo, hi = parse_range(self.versions)
        null_lo, null_hi = parse_range(self.nullable)
        is_array = self.type.startswith("[]")
        kind = self.type[2:] if is_array else self.type
        if kind not in PRIMITIVES and self.struct is None:
            raise ValueError(f"field {self.name}: struct type {kind} needs struct=")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "null_lo", null_lo)
        object.__setattr__(self, "null_hi", null_hi)
        object.__setattr__(self, "is_array", is_array)
        object.__setattr__(self, "kind", kind)

    def present(self, version: int) -> bool:
        return self.lo <= version <= self.hi

    def nullable_in(self, version: int) -> bool:
        return self.null_lo <= version <= self.null_hi


@dataclass(frozen=True, slots=True)
class Struct:
    """A value class (a frozen dataclass taking every field as a keyword) and its rows."""

    cls: type[Any]
    fields: tuple[F, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """A request or response body: API key, top-level struct, versions, flexibility."""

    api_key: int
    body: Struct
    versions: str
    flexible_from: int | None
    lo: int = field(init=False)
    hi: int = field(init=False)

    def __post_init__(self) -> None:
        lo, hi = parse_range(self.versions)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from

    def supports(self, version: int) -> bool:
        return self.lo <= version <= self.hi
