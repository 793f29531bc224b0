"""One generic encoder and decoder for every schema in ``messages/``.

For each (struct, version) the rows of ``schema.F`` are compiled once into a plan: a
tuple of (field name, read or write function) for the fields present in that version,
in order (consecutive fixed-width numbers grouped into one ``struct`` call), and a
table of tagged fields by tag. Decoding builds the struct's value
class with the fields present (absent ones take their defaults); encoding reads the
same attributes back. In flexible versions each struct ends with its tagged fields;
unknown tags are skipped, a repeated tag or a tagged field that does not fill exactly
its announced size is malformed.

A nested struct value may stand pre-encoded (``encode_nested``: an ``EncodedStruct``,
its bytes at one version): the encoder writes those bytes in its place. A Metadata
answer's topics, unchanged between requests, are encoded once this way.

Decoding is bounded: arrays check ``count * minimum element size`` against the bytes
remaining before anything is built, and against the elements the reader may still
decode (``wire.Reader(max_elements=)``); strings and bytes check their length (see
``wire``). Errors: ``DecodeError`` for bytes that do not parse (the peer is wrong),
``InvalidArgumentError`` for a value that cannot be encoded (the caller is wrong).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections.abc import Callable
from typing import Any

from sentinel.codec.varint import encode_uvarint
from sentinel.errors import DecodeError, InvalidArgumentError
from sentinel.protocol.kafka import wire
from sentinel.protocol.kafka.schema import F, Message, Struct

__all__ = ["EncodedStruct", "decode", "decode_body", "encode", "encode_into", "encode_nested"]

ReadFn = Callable[[wire.Reader], Any]
WriteFn = Callable[[bytearray, Any], None]

_FIXED_SIZE = {"int8": 1, "bool": 1, "int16": 2, "uint16": 2, "int32": 4, "int64": 8,
               "float64": 8, "uuid": 16}


@dataclasses.dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive fixed-width number fields, read and written with one ``struct`` call
    (a Fetch's partition is five: one unpack instead of five reads, each with its own
    bounds check; 10,000 of them decoded in 39 ms before)."""

    names: tuple[str, ...]
    packer: struct.Struct
    values_of: Callable[[Any], tuple[Any, ...]]
    #: What a short read names (made once: every read passes it).
    what: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    cls: type[Any]
    fields: tuple[tuple[str, ReadFn, WriteFn], ...]
    tagged: dict[int, tuple[str, ReadFn, WriteFn, Any]]
    flexible: bool
    min_size: int
    #: ``fields`` in order, each run of two or more fixed-width numbers as one ``_Run``.
    steps: tuple[tuple[str, ReadFn, WriteFn] | _Run, ...] = ()


_PLANS: dict[tuple[int, int, bool], _Plan] = {}


def _min_size(kind: str, is_array: bool, flexible: bool) -> int:
    """The fewest bytes a field of this kind takes (a struct's own size is its plan's)."""
    if is_array or kind in ("bytes", "records"):
        return 1 if flexible else 4
    if kind == "string":
        return 1 if flexible else 2
    return _FIXED_SIZE[kind]


def _scalar(kind: str, flexible: bool, nested: _Plan | None
            ) -> tuple[ReadFn, WriteFn]:
    if kind in wire.PACKERS:
        st = wire.PACKERS[kind]
        reader = getattr(wire.Reader, kind)

        def write_fixed(out: bytearray, v: Any) -> None:
            out += st.pack(v)

        return reader, write_fixed
    if kind == "bool":
        def write_bool(out: bytearray, v: Any) -> None:
            out.append(1 if v else 0)
        return wire.Reader.boolean, write_bool
    if kind == "uuid":
        def write_uuid(out: bytearray, v: Any) -> None:
            out += v.bytes
        return wire.Reader.uuid, write_uuid
    if kind == "string":
        return (lambda r: r.string(flexible),
                lambda out, v: wire.write_string(out, v, flexible))
    if kind == "bytes":
        return (lambda r: r.blob(flexible),
                lambda out, v: wire.write_bytes(out, v, flexible))
    if kind == "records":  # record batches, often megabytes: a view, not a copy
        return (lambda r: r.blob_view(flexible),
                lambda out, v: wire.write_bytes(out, v, flexible))
    assert nested is not None
    return (lambda r: _read_struct(r, nested),
            lambda out, v: _write_struct(out, v, nested))


def _field_fns(f: F, version: int, flexible: bool) -> tuple[ReadFn, WriteFn]:
    nested = f.struct
    # Schemas are trees: the nested struct's plan is made first, once.
    nested_plan = None if nested is None else _plan(nested, version, flexible)
    read_one, write_one = _scalar(f.kind, flexible, nested_plan)
    nullable = f.nullable_in(version)
    name = f.name
    if not f.is_array:
        if not nullable and f.kind in ("string", "bytes", "records"):
            def read_required(r: wire.Reader) -> Any:
                v = read_one(r)
                if v is None:
                    raise DecodeError(f"field {name} is null in version {version}")
                return v
            return read_required, write_one
        return read_one, write_one
    min_elem = max(1, nested_plan.min_size if nested_plan
                   else _min_size(f.kind, False, flexible))

    def read_array(r: wire.Reader) -> Any:
        n = r.array_length(flexible)
        if n < 0:
            if not nullable:
                raise DecodeError(f"array {name} is null in version {version}")
            return None
        if n * min_elem > r.remaining:
            raise DecodeError(f"array {name}: {n} elements cannot fit in "
                              f"{r.remaining} bytes")
        r.count_elements(n, name)
        if nested_plan is not None:  # (one call an element, not two)
            return tuple([_read_struct(r, nested_plan) for _ in range(n)])
        return tuple([read_one(r) for _ in range(n)])

    def write_array(out: bytearray, v: Any) -> None:
        if v is None:
            if not nullable:
                raise InvalidArgumentError(f"array {name} is not nullable in version {version}")
            wire.write_array_length(out, -1, flexible)
            return
        wire.write_array_length(out, len(v), flexible)
        if nested_plan is not None:
            for item in v:
                _write_struct(out, item, nested_plan)
            return
        for item in v:
            write_one(out, item)

    return read_array, write_array


def _plan(s: Struct, version: int, flexible: bool) -> _Plan:
    key = (id(s), version, flexible)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    defaults = {fd.name: fd.default for fd in dataclasses.fields(s.cls)}
    fields: list[tuple[str, ReadFn, WriteFn]] = []
    tagged: dict[int, tuple[str, ReadFn, WriteFn, Any]] = {}
    fixed: list[str | None] = []  # each of ``fields``: its struct format, if a number
    min_size = 1 if flexible else 0
    for f in s.fields:
        if not f.present(version):
            continue
        read, write = _field_fns(f, version, flexible)
        if f.tag is not None and flexible:
            tagged[f.tag] = (f.name, read, write, defaults[f.name])
        else:
            fields.append((f.name, read, write))
            number = f.kind in wire.PACKERS and not f.is_array
            fixed.append(wire.PACKERS[f.kind].format.lstrip(">") if number else None)
            min_size += _min_size(f.kind, f.is_array, flexible)
    plan = _Plan(s.cls, tuple(fields), tagged, flexible, min_size, _steps(fields, fixed))
    _PLANS[key] = plan
    return plan


def _steps(fields: list[tuple[str, ReadFn, WriteFn]], fixed: list[str | None]
           ) -> tuple[tuple[str, ReadFn, WriteFn] | _Run, ...]:
    """``fields`` with each run of two or more fixed-width numbers made one ``_Run``."""
    steps: list[tuple[str, ReadFn, WriteFn] | _Run] = []
    i = 0
    while i < len(fields):
        j = i
        while j < len(fields) and fixed[j] is not None:
            j += 1
        if j - i >= 2:
            names = tuple(name for name, _, _ in fields[i:j])
            packer = struct.Struct(">" + "".join(f for f in fixed[i:j] if f))
            steps.append(_Run(names, packer, operator.attrgetter(*names),
                              f"fields {names[0]}..{names[-1]}"))
            i = j
        else:
            steps.append(fields[i])
            i += 1
    return tuple(steps)


def _read_tagged(r: wire.Reader, plan: _Plan, values: dict[str, Any]) -> None:
    count = r.uvarint()
    if count * 2 > r.remaining:
        raise DecodeError(f"{count} tagged fields cannot fit in {r.remaining} bytes")
    seen: set[int] = set()
    for _ in range(count):
        tag = r.uvarint()
        size = r.uvarint()
        r.need(size, f"tagged field {tag}")
        if tag in seen:
            raise DecodeError(f"tagged field {tag} repeated")
        seen.add(tag)
        end = r.pos + size
        known = plan.tagged.get(tag)
        if known is None:
            r.pos = end
            continue
        name, read, _, _ = known
        saved_end = r.end
        r.end = end
        try:
            values[name] = read(r)
            if r.pos != end:
                raise DecodeError(f"tagged field {name} leaves {end - r.pos} bytes unread")
        finally:
            r.end = saved_end


def _read_struct(r: wire.Reader, plan: _Plan) -> Any:
    values: dict[str, Any] = {}
    for step in plan.steps:
        if type(step) is _Run:
            size = step.packer.size
            r.need(size, step.what)
            values.update(zip(step.names, step.packer.unpack_from(r.buf, r.pos), strict=True))
            r.pos += size
        else:
            name, read, _ = step  # type: ignore[misc]
            values[name] = read(r)
    if plan.flexible:
        if r.pos < r.end and r.buf[r.pos] == 0:  # no tagged fields: the usual case
            r.pos += 1
        else:
            _read_tagged(r, plan, values)
    return plan.cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedStruct:
    """A nested struct value encoded once (``encode_nested``): written as ``data`` in
    the place of a value of its struct, at the version it was encoded for only."""

    plan: _Plan
    data: bytes
    #: The first non-zero ``error_code`` inside the value (0: none), for those who
    #: look for one without decoding (the request metrics).
    error_code: int


def _write_struct(out: bytearray, value: Any, plan: _Plan) -> None:
    if not isinstance(value, plan.cls):
        if type(value) is EncodedStruct and value.plan is plan:
            out += value.data
            return
        raise InvalidArgumentError(f"expected {plan.cls.__name__}, got {type(value).__name__}")
    for step in plan.steps:
        if type(step) is _Run:
            out += step.packer.pack(*step.values_of(value))
        else:
            name, _, write = step  # type: ignore[misc]
            write(out, getattr(value, name))
    if not plan.flexible:
        return
    if not plan.tagged:  # no tagged field in this struct: a count of 0
        out.append(0)
        return
    present = [(tag, name, write) for tag, (name, _, write, default) in sorted(plan.tagged.items())
               if getattr(value, name) != default]
    out += encode_uvarint(len(present))
    for tag, name, write in present:
        body = bytearray()
        write(body, getattr(value, name))
        wire.write_tagged_header(out, tag, len(body))
        out += body


def _check(message: Message, version: int) -> None:
    if not message.supports(version):
        raise InvalidArgumentError(
            f"api {message.api_key} has no version {version} (only {message.versions})")


def decode_body(r: wire.Reader, message: Message, version: int, *,
                trailing_ok: bool = False) -> Any:
    """Decode one body at ``r`` (which must end where the body ends, unless
    ``trailing_ok``: bytes after the body are then ignored, as Kafka's brokers do)."""
    _check(message, version)
    value = _read_struct(r, _plan(message.body, version, message.flexible(version)))
    if r.pos != r.end and not trailing_ok:
        raise DecodeError(f"{r.end - r.pos} bytes left after api {message.api_key} "
                          f"v{version} body")
    return value


def decode(message: Message, version: int, data: bytes | bytearray | memoryview) -> Any:
    """Decode a whole body; trailing bytes are malformed."""
    return decode_body(wire.Reader(data), message, version)


def encode_into(out: bytearray, message: Message, version: int, value: Any) -> None:
    """Append the body of ``value`` at ``version`` to ``out``."""
    _check(message, version)
    try:
        _write_struct(out, value, _plan(message.body, version, message.flexible(version)))
    except (struct.error, TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise InvalidArgumentError(
            f"api {message.api_key} v{version}: value does not encode: {exc}") from exc


def _nested_struct(s: Struct, cls: type[Any]) -> Struct | None:
    """The struct of value class ``cls`` among ``s`` and the structs nested in it."""
    if s.cls is cls:
        return s
    for f in s.fields:
        found = None if f.struct is None else _nested_struct(f.struct, cls)
        if found is not None:
            return found
    return None


def encode_nested(message: Message, version: int, value: Any, error_code: int = 0
                  ) -> EncodedStruct:
    """``value``, a struct nested in ``message``'s body (a Metadata answer's topic),
    encoded at ``version``, to be written in its place in answers of that version.
    ``error_code``: the first error code ``value`` carries (``EncodedStruct``)."""
    _check(message, version)
    found = _nested_struct(message.body, type(value))
    if found is None:
        raise InvalidArgumentError(
            f"api {message.api_key} has no struct {type(value).__name__}")
    plan = _plan(found, version, message.flexible(version))
    out = bytearray()
    try:
        _write_struct(out, value, plan)
    except (struct.error, TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise InvalidArgumentError(
            f"api {message.api_key} v{version}: value does not encode: {exc}") from exc
    return EncodedStruct(plan, bytes(out), error_code)


def encode(message: Message, version: int, value: Any) -> bytes:
    out = bytearray()
    encode_into(out, message, version, value)
    return bytes(out)



