"""Generate ``src/sentinel/protocol/kafka/messages/*.py`` from Kafka's JSON message definitions.

Development tool, not a runtime dependency. The machine-readable transcription of
Kafka's ``clients/src/main/resources/common/message/*.json`` used here is the set of
per-version dataclasses in the PyPI package ``kio`` (Apache-2.0): install it anywhere
(``pip install --target /tmp/kiot kio``) and run::

    PYTHONPATH=/tmp/kiot python tools/gen_kafka_messages.py

For every API and version we support it records, field by field: the Kafka type, the
versions the field is present in, the versions it is nullable in, its tag (tagged
fields), and its default. The output is plain data (``F(...)`` rows) plus one frozen
dataclass per struct: the union of the fields of every version, as Kafka's Java
classes are. Only the schema facts are taken; the codec is ours.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import sys
import types
import typing
import uuid
from pathlib import Path

APIS: dict[str, tuple[int, int, int]] = {
    # module: (api_key, min, max)
    "produce": (0, 3, 9),
    "fetch": (1, 4, 11),
    "list_offsets": (2, 1, 7),
    "metadata": (3, 1, 12),
    "offset_commit": (8, 2, 8),
    "offset_fetch": (9, 1, 8),
    "find_coordinator": (10, 0, 2),
    "join_group": (11, 0, 5),
    "heartbeat": (12, 0, 3),
    "leave_group": (13, 0, 4),
    "sync_group": (14, 0, 3),
    "describe_groups": (15, 0, 5),
    "list_groups": (16, 0, 1),
    "api_versions": (18, 0, 4),
    "create_topics": (19, 2, 4),
    "delete_topics": (20, 1, 4),
    "init_producer_id": (22, 0, 4),
    "offset_for_leader_epoch": (23, 2, 4),
    "describe_configs": (32, 1, 1),
    "create_partitions": (37, 0, 1),
    "delete_records": (21, 0, 2),
    "alter_configs": (33, 0, 2),
    "delete_groups": (42, 0, 2),
    "incremental_alter_configs": (44, 0, 1),
    "alter_partition_reassignments": (45, 0, 0),
    "list_partition_reassignments": (46, 0, 0),
    "offset_delete": (47, 0, 0),
    "describe_cluster": (60, 0, 1),
}

OUT = Path(__file__).resolve().parent.parent / "src/sentinel/protocol/kafka/messages"


def _ms(value: object) -> object:
    if isinstance(value, datetime.timedelta):
        return round(value.total_seconds() * 1000)
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    return value


def _strip_optional(tp: object) -> tuple[object, bool]:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


class Acc:
    """Per struct: ordered field names and per-field facts over versions."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.facts: dict[str, dict[str, object]] = {}


def walk(cls: type, version: int, flexible: bool, structs: dict[str, Acc], name: str) -> None:
    acc = structs.setdefault(name, Acc())
    prev: str | None = None
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kt = f.metadata.get("kafka_type")
        tp, nullable = _strip_optional(hints[f.name])
        fname = f.name
        if kt in ("timedelta_i32", "timedelta_i64", "datetime_i64"):
            fname += "_ms"  # kio drops Kafka's "Ms" suffix when it maps to timedelta
        if kt in ("datetime_i64", "uuid"):
            nullable = False  # kio maps -1 to None; on the wire it is a plain int64
        is_array = typing.get_origin(tp) is tuple
        inner = typing.get_args(tp)[0] if is_array else tp
        inner, _ = _strip_optional(inner)
        struct_name = None
        if dataclasses.is_dataclass(inner):
            struct_name = inner.__name__
            walk(inner, version, flexible, structs, struct_name)  # type: ignore[arg-type]
            kt = struct_name
        typ = ("[]" if is_array else "") + str(kt)
        tag = f.metadata.get("tag")
        default: object = dataclasses.MISSING
        if f.default is not dataclasses.MISSING:
            default = _ms(f.default)
            if kt == "datetime_i64" and default is None:
                default = -1
        facts = acc.facts.get(fname)
        if facts is None:
            facts = {"type": typ, "versions": set(), "nullable": set(), "tag": tag,
                     "default": default, "struct": struct_name}
            acc.facts[fname] = facts
            idx = 0 if prev is None else acc.order.index(prev) + 1
            acc.order.insert(idx, fname)
        else:
            assert facts["type"] == typ, (name, fname, facts["type"], typ)
            if tag is not None:
                assert facts["tag"] in (None, tag), (name, fname)
                facts["tag"] = tag
            if default is not dataclasses.MISSING:
                facts["default"] = default
        facts["versions"].add(version)  # type: ignore[attr-defined]
        if nullable:
            facts["nullable"].add(version)  # type: ignore[attr-defined]
        prev = fname


def vrange(vs: set[int]) -> str:
    lo, hi = min(vs), max(vs)
    assert vs == set(range(lo, hi + 1)), vs
    return f"{lo}-{hi}"


PY = {"int8": "int", "int16": "int", "int32": "int", "int64": "int", "uint16": "int",
      "error_code": "int", "timedelta_i32": "int", "timedelta_i64": "int",
      "datetime_i64": "int", "bool": "bool", "float64": "float", "string": "str",
      "bytes": "bytes", "records": "bytes", "uuid": "UUID"}
KTYPE = {"error_code": "int16", "timedelta_i32": "int32", "timedelta_i64": "int64",
         "datetime_i64": "int64"}
ZERO = {"int": "0", "bool": "False", "float": "0.0", "str": '""', "bytes": 'b""',
        "UUID": "ZERO_UUID"}
RECORDS_PY = {
    # (module, struct): the Python type of its ``records`` field, where it is wider than
    # bytes: produce decodes record batches as views of the received frame, and fetch
    # sends stored batches to the socket by reference (``wire.Pieces``), unjoined.
    ("produce", "PartitionProduceData"): "bytes | memoryview",
    ("fetch", "PartitionData"): "bytes | memoryview | Pieces",
}


def pyrepr(value: object) -> str:
    if isinstance(value, uuid.UUID):
        assert value.int == 0
        return "ZERO_UUID"
    if isinstance(value, tuple):
        assert value == ()
        return "()"
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str | bytes) or value is None:
        return repr(value)
    raise AssertionError(f"default {value!r}")


def generate(module: str, key: int, lo: int, hi: int) -> str:
    parts = {}
    for kind in ("request", "response"):
        structs: dict[str, Acc] = {}
        flex: list[int] = []
        top = ""
        for v in range(lo, hi + 1):
            mod = importlib.import_module(f"kio.schema.{module}.v{v}.{kind}")
            cls = next(c for c in vars(mod).values() if isinstance(c, type)
                       and c.__module__ == mod.__name__ and
                       getattr(c, "__type__", None) is not None and
                       c.__type__.name == kind)
            top = cls.__name__
            if cls.__flexible__:
                flex.append(v)
            walk(cls, v, cls.__flexible__, structs, top)
        parts[kind] = (structs, flex, top)
    # struct names must not collide between request and response
    names_req = set(parts["request"][0])
    for n in parts["response"][0]:
        assert n not in names_req, (module, n)
    lines = [f'"""Kafka API {key} ({module}), versions {lo}-{hi}: schema rows and value types.',
             "", "Generated by ``tools/gen_kafka_messages.py`` from Kafka's JSON message",
             "definitions; edit the generator, not this file.", '"""', "",
             "from __future__ import annotations", "",
             "from dataclasses import dataclass", "UUID_IMPORT", "",
             "from sentinel.protocol.kafka.schema import SCHEMA_IMPORT", ""]
    defs: list[str] = []
    for kind in ("request", "response"):
        structs, flex, top = parts[kind]
        for sname in reversed(list(structs)):
            acc = structs[sname]
            cls_lines = ["", "", "@dataclass(frozen=True, slots=True, kw_only=True)",
                         f"class {sname}:",
                         f'    """{"The request" if kind == "request" else "The response"}'
                         f' struct {sname} of API {key}."""']
            rows = []
            for fname in acc.order:
                fc = acc.facts[fname]
                typ = str(fc["type"])
                arr = typ.startswith("[]")
                base = typ[2:] if arr else typ
                sn = fc["struct"]
                py = sn if sn else PY[base]
                nullable = bool(fc["nullable"])
                if arr:
                    ann = f"tuple[{py}, ...]"
                elif base == "records":
                    ann = RECORDS_PY.get((module, sname), str(py))
                else:
                    ann = str(py)
                if nullable:
                    ann += " | None"
                d = fc["default"]
                if d is dataclasses.MISSING or (sn and not arr):
                    if arr:
                        dtext = "()"
                    elif sn:
                        dtext = "None"
                        if not nullable:
                            ann += " | None"
                    else:
                        dtext = ZERO[str(py)]
                else:
                    dtext = pyrepr(d)
                    if d is None and not nullable:
                        ann += " | None"
                cls_lines.append(f"    {fname}: {ann} = {dtext}")
                kt = KTYPE.get(base, base)
                ktext = ("[]" if arr else "") + kt
                extra = ""
                if fc["nullable"]:
                    extra += f', nullable="{vrange(fc["nullable"])}"'  # type: ignore[arg-type]
                if fc["tag"] is not None:
                    extra += f", tag={fc['tag']}"
                if sn:
                    extra += f", struct={_const(sn)}"
                rows.append(f'    F("{fname}", "{ktext}", "{vrange(fc["versions"])}"{extra}),')  # type: ignore[arg-type]
            defs.extend(cls_lines)
            defs.append("")
            defs.append("")
            defs.append(f"{_const(sname)} = Struct({sname}, (")
            defs.extend(rows)
            defs.append("))")
        flex_from = min(flex) if flex else None
        defs.append("")
        defs.append(f"{kind.upper()} = Message({key}, {_const(top)}, \"{lo}-{hi}\", "
                    f"flexible_from={flex_from})")
    text = "\n".join(lines + defs[1:] if defs[0] == "" else lines + defs) + "\n"
    uses_uuid = ": UUID" in text or "[UUID" in text
    text = text.replace("UUID_IMPORT", "from uuid import UUID" if uses_uuid else "")
    text = text.replace("from dataclasses import dataclass\n\n\n", "from dataclasses import dataclass\n\n")
    names = ["F", "Message", "Struct"]
    if "= ZERO_UUID" in text:
        names.insert(0, "ZERO_UUID")
    schema_import = ", ".join(names)
    if "| Pieces" in text:
        schema_import += "\nfrom sentinel.protocol.kafka.wire import Pieces"
    return text.replace("SCHEMA_IMPORT", schema_import)


def _const(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.upper())
    return "_" + "".join(out)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for module, (key, lo, hi) in APIS.items():
        (OUT / f"{module}.py").write_text(generate(module, key, lo, hi))
        print(module, file=sys.stderr)


if __name__ == "__main__":
    main()
