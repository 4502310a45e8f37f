"""A reader of Rust's ``Debug`` text, the only form in which the binding shows some values.

Works around: ``automerge`` 1.0.0rc1 gives a patch (``Document.diff``) to
Python only as an opaque object whose ``repr`` is the Rust core's ``Debug``
output, and that text is also the only way to see a counter or a value of an
unknown type without a panic (see :mod:`.patch_text`). Delete this module
when the binding converts patches (or at least counters) into Python
objects.

Only the subset of ``Debug`` syntax the core's patches use is read:
``Name { field: value, ... }``, ``Name(value, ...)``, bare ``Name``, tuples,
lists, string literals (with Rust's escapes), numbers and booleans.

>>> parse_debug('Counter(Counter { start: 1, current: 3 })')
DebugCall(name='Counter', args=[DebugStruct(name='Counter', fields={'start': 1, 'current': 3})])
>>> parse_debug('(Root, [1, -2.5], "a\\\\"b\\\\u{1f600}", true)')
(DebugCall(name='Root', args=[]), [1, -2.5], 'a"b😀', True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["DebugCall", "DebugStruct", "parse_debug", "unescape"]


@dataclass(frozen=True)
class DebugStruct:
    """``Name { field: value, ... }``"""

    name: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class DebugCall:
    """``Name(value, ...)``, or a bare ``Name`` (no arguments)."""

    name: str
    args: list[Any]


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>-?inf\b|NaN\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[{}()\[\],:])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]+\}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def unescape(literal: str) -> str:
    """The string a Rust ``Debug`` string literal (quotes included) stands for.

    >>> unescape('"a\\\\nb\\\\u{e9}"')
    'a\\nbé'
    """

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(one, literal[1:-1])


class _Parser:
    """A recursive-descent reader of ``Debug`` text."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        end = len(text.rstrip())
        while pos < end:
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise ValueError(f"unexpected text at {pos}: {text[pos : pos + 20]!r}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0

    def parse(self) -> Any:
        value = self.value()
        if self.pos != len(self.tokens):
            raise ValueError("trailing text after a value")
        return value

    def next(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def expect(self, punct: str) -> None:
        kind, text = self.next()
        if kind != "punct" or text != punct:
            raise ValueError(f"expected {punct!r}, found {text!r}")

    def sequence(self, close: str) -> list[Any]:
        items: list[Any] = []
        while self.peek() != close:
            items.append(self.value())
            if self.peek() == ",":
                self.pos += 1
        self.pos += 1
        return items

    def value(self) -> Any:
        kind, text = self.next()
        if kind == "str":
            return unescape(text)
        if kind == "num":
            if text in ("inf", "-inf", "NaN") or any(c in text for c in ".eE"):
                return float(text)
            return int(text)
        if kind == "punct":
            if text == "[":
                return self.sequence("]")
            if text == "(":
                return tuple(self.sequence(")"))
            raise ValueError(f"unexpected {text!r}")
        if text in ("true", "false"):
            return text == "true"
        if self.peek() == "(":
            self.pos += 1
            return DebugCall(text, self.sequence(")"))
        if self.peek() == "{":
            self.pos += 1
            fields: dict[str, Any] = {}
            while self.peek() != "}":
                field_kind, name = self.next()
                if field_kind != "name":
                    raise ValueError(f"expected a field name, found {name!r}")
                self.expect(":")
                fields[name] = self.value()
                if self.peek() == ",":
                    self.pos += 1
            self.pos += 1
            return DebugStruct(text, fields)
        return DebugCall(text, [])


def parse_debug(text: str) -> Any:
    """Read one value of ``Debug`` text.

    Structures come back as :class:`DebugStruct`, tuple structs and enum
    variants as :class:`DebugCall`, tuples as ``tuple``, lists as ``list``,
    strings, numbers and booleans as themselves.

    Raises:
        ValueError: the text is not one value of the syntax read here.
        IndexError: the text ends inside a value.
    """
    return _Parser(text).parse()
