"""Hypothesis strategies for any schema at any version, and helpers shared by the Kafka tests.

Values are drawn from the schema rows themselves: the fields present in a version get
a drawn value (None too where the field is nullable in that version), the others keep
their defaults, so ``decode(encode(v)) == v`` must hold exactly.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sentinel.protocol.kafka.messages import MODULES
from sentinel.protocol.kafka.schema import F, Message, Struct

_INTS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


def _scalar(kind: str, nested: Struct | None, version: int) -> st.SearchStrategy[Any]:
    if kind in _INTS:
        bits = _INTS[kind]
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if kind == "uint16":
        return st.integers(0, 0xFFFF)
    if kind == "float64":
        return st.floats(allow_nan=False)
    if kind == "bool":
        return st.booleans()
    if kind == "uuid":
        return st.uuids()
    if kind == "string":
        return st.text(max_size=12)
    if kind in ("bytes", "records"):
        return st.binary(max_size=24)
    assert nested is not None
    return struct_values(nested, version)


def field_values(f: F, version: int) -> st.SearchStrategy[Any]:
    one = _scalar(f.kind, f.struct, version)
    strategy = st.lists(one, max_size=3).map(tuple) if f.is_array else one
    if f.nullable_in(version):
        strategy = st.none() | strategy
    return strategy


def struct_values(s: Struct, version: int) -> st.SearchStrategy[Any]:
    return st.builds(s.cls, **{f.name: field_values(f, version)
                               for f in s.fields if f.present(version)})


def message_values(message: Message, version: int) -> st.SearchStrategy[Any]:
    return struct_values(message.body, version)


def all_versions() -> list[tuple[str, str, Message, int]]:
    """(api name, "request"/"response", message, version) for every supported version."""
    out = []
    for module in MODULES:
        name = module.__name__.rsplit(".", 1)[1]
        for kind, message in (("request", module.REQUEST), ("response", module.RESPONSE)):
            out.extend((name, kind, message, v) for v in range(message.lo, message.hi + 1))
    return out
