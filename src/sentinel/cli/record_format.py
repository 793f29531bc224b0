"""kcat's ``-f`` format strings: how ``consume -f`` prints each record.

    %t topic        %p partition      %o offset        %T timestamp (epoch ms)
    %k key          %K key length     %s value         %S value length
    %h headers (k=v,k2=v2)            %%  a percent sign
    \\n newline     \\t tab           \\r carriage return   \\\\ backslash

Nothing is added: as kcat, the format ends with ``\\n`` to print a line per record.
A missing key or value prints empty and its length -1. ``compile_format`` turns the
string into pieces once (a ``ValueError`` names an unknown ``%x``); ``render`` is pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentinel.client import ConsumerRecord
from sentinel.client.types import Headers

__all__ = ["RecordFormat", "compile_format", "headers_text"]


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", "replace")


def _length(data: bytes | None) -> str:
    return "-1" if data is None else str(len(data))


def headers_text(headers: Headers) -> str:
    """``k=v,k2=v2`` (a header without a value: just its key)."""
    return ",".join(k if v is None else f"{k}={_text(v)}" for k, v in headers)


_FIELDS: dict[str, Callable[[ConsumerRecord], str]] = {
    "t": lambda r: r.topic,
    "p": lambda r: str(r.partition),
    "o": lambda r: str(r.offset),
    "T": lambda r: str(r.timestamp),
    "k": lambda r: _text(r.key),
    "K": lambda r: _length(r.key),
    "s": lambda r: _text(r.value),
    "S": lambda r: _length(r.value),
    "h": lambda r: headers_text(r.headers),
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}

Piece = str | Callable[[ConsumerRecord], str]


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """A compiled format: literal text and field getters, in order."""

    pieces: tuple[Piece, ...]

    def render(self, record: ConsumerRecord) -> str:
        return "".join(p if isinstance(p, str) else p(record) for p in self.pieces)


def compile_format(text: str) -> RecordFormat:
    """The pieces of ``text``; ``ValueError`` for an unknown ``%x`` or a dangling ``%``."""
    pieces: list[Piece] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if char == "%":
            if nxt == "%":
                literal.append("%")
            elif nxt in _FIELDS:
                if literal:
                    pieces.append("".join(literal))
                    literal = []
                pieces.append(_FIELDS[nxt])
            else:
                known = " ".join(f"%{k}" for k in _FIELDS)
                raise ValueError(f"unknown format field %{nxt} (known: {known} %%)")
            i += 2
        elif char == "\\" and nxt in _ESCAPES:
            literal.append(_ESCAPES[nxt])
            i += 2
        else:
            literal.append(char)
            i += 1
    if literal:
        pieces.append("".join(literal))
    return RecordFormat(tuple(pieces))
