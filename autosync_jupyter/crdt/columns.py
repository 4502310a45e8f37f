"""Automerge's column encodings: decoding them, and writing them the one way Automerge does.

Automerge stores a change's operations column by column: unsigned and
signed LEB128 numbers, run-length encoded columns (RLE), delta-encoded
columns on top of RLE, boolean columns of alternating run lengths, and a
value column (a metadata RLE column plus raw bytes). Every one of these
formats can say the same thing in many byte sequences (a run of one value
or a literal run of one, an overlong LEB128, two adjacent runs of the same
value); Automerge's encoders always write the same one.

That canonical form is what makes a change loadable after a save: a saved
document keeps operations, not change bytes, and rebuilds each change by
encoding its operations again, whose hash must match the original. So
:func:`encode_rle` and friends here follow Automerge's encoders
(``rust/automerge/src/columnar/encoding`` of the 0.5 core the binding
embeds) exactly, and the change reader compares what it re-encodes with
what it received.

Decoders are bounded: ``limit`` caps how many rows a column may expand to,
so a few bytes claiming a run of 2**60 values cost nothing.

>>> encode_rle([1, 1, 2, None, None, 3], "u").hex()
'02017f0200027f03'
>>> decode_rle(bytes.fromhex("02017f0200027f03"), "u", limit=10)
[1, 1, 2, None, None, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

__all__ = [
    "ColumnError",
    "Kind",
    "count_rows",
    "decode_boolean",
    "decode_delta",
    "decode_rle",
    "distinct_values",
    "encode_boolean",
    "encode_delta",
    "encode_maybe_boolean",
    "encode_rle",
    "read_sleb",
    "read_uleb",
    "sleb",
    "uleb",
]

_U64_MAX: Final = 2**64 - 1
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1

#: What an RLE column holds: ``"u"`` unsigned 64-bit, ``"i"`` signed 64-bit,
#: ``"s"`` UTF-8 strings (kept as their bytes).
Kind: TypeAlias = Literal["u", "i", "s"]
Cell: TypeAlias = "int | bytes | None"


class ColumnError(ValueError):
    """Column bytes that do not decode (truncated, out of range, too many rows)."""


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 (at most 64 bits, overlong forms accepted) at ``pos``.

    Returns the value and the position after it.
    """
    if pos < len(data) and data[pos] < 0x80:
        return data[pos], pos + 1  # one byte: most lengths, counts and deltas
    value = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ColumnError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _U64_MAX:
                raise ColumnError("LEB128 number larger than 64 bits")
            return value, pos
        shift += 7
        if shift > 63:
            raise ColumnError("LEB128 number longer than 64 bits")


def read_sleb(data: bytes, pos: int) -> tuple[int, int]:
    """Read a signed LEB128 (at most 64 bits) at ``pos``; return the value and the next position."""
    value = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ColumnError("truncated LEB128 number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte & 0x40:
                value -= 1 << shift
            if not _I64_MIN <= value <= _I64_MAX:
                raise ColumnError("signed LEB128 number outside 64 bits")
            return value, pos
        if shift > 63:
            raise ColumnError("signed LEB128 number longer than 64 bits")


def uleb(value: int) -> bytes:
    """The shortest unsigned LEB128 encoding of ``value``."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(value: int) -> bytes:
    """The shortest signed LEB128 encoding of ``value``."""
    if -0x40 <= value < 0x40:
        return bytes((value & 0x7F,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _read_value(data: bytes, pos: int, kind: Kind) -> tuple[int | bytes, int]:
    if kind == "u":
        return read_uleb(data, pos)
    if kind == "i":
        return read_sleb(data, pos)
    length, pos = read_uleb(data, pos)
    end = pos + length
    if end > len(data):
        raise ColumnError("truncated string in a column")
    raw = data[pos:end]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ColumnError("a string in a column is not UTF-8") from None
    return raw, end


def _write_value(out: bytearray, value: int | bytes, kind: Kind) -> None:
    if kind == "u":
        assert isinstance(value, int)
        out += uleb(value)
    elif kind == "i":
        assert isinstance(value, int)
        out += sleb(value)
    else:
        assert isinstance(value, bytes)
        out += uleb(len(value))
        out += value


def decode_rle(data: bytes, kind: Kind, *, limit: int) -> list[int | bytes | None]:
    """Expand an RLE column into its rows (None for null).

    Raises:
        ColumnError: the bytes do not decode, or expand to more than ``limit`` rows.
    """
    out: list[int | bytes | None] = []
    pos = 0
    end = len(data)
    while pos < end:
        count, pos = read_sleb(data, pos)
        if count > 0:
            if len(out) + count > limit:
                raise ColumnError(f"a column holds more than {limit} rows")
            value, pos = _read_value(data, pos, kind)
            out.extend([value] * count)
        elif count < 0:
            if len(out) - count > limit:
                raise ColumnError(f"a column holds more than {limit} rows")
            for _ in range(-count):
                value, pos = _read_value(data, pos, kind)
                out.append(value)
        else:
            nulls, pos = read_uleb(data, pos)
            if len(out) + nulls > limit:
                raise ColumnError(f"a column holds more than {limit} rows")
            out.extend([None] * nulls)
    return out


def encode_rle(values: Sequence[int | bytes | None], kind: Kind) -> bytes:
    """Encode rows as Automerge's ``RleEncoder`` does (an all-null column is empty)."""
    out = bytearray()
    literal: list[int | bytes] = []
    i = 0
    n = len(values)
    leading_nulls = True
    while i < n:
        value = values[i]
        j = i + 1
        while j < n and values[j] == value and (value is None) == (values[j] is None):
            j += 1
        run = j - i
        if value is None:
            if literal:
                out += sleb(-len(literal))
                for item in literal:
                    _write_value(out, item, kind)
                literal = []
            if not (leading_nulls and j == n):
                out += b"\x00"
                out += uleb(run)
        elif run >= 2:
            if literal:
                out += sleb(-len(literal))
                for item in literal:
                    _write_value(out, item, kind)
                literal = []
            out += sleb(run)
            _write_value(out, value, kind)
            leading_nulls = False
        else:
            literal.append(value)
            leading_nulls = False
        i = j
    if literal:
        out += sleb(-len(literal))
        for item in literal:
            _write_value(out, item, kind)
    return bytes(out)


def distinct_values(data: bytes, kind: Kind) -> set[int | bytes]:
    """The distinct non-null values of an RLE column, read without expanding its runs.

    >>> sorted(distinct_values(bytes.fromhex("02017f0200027f03"), "u"))
    [1, 2, 3]

    Raises:
        ColumnError: the bytes do not decode.
    """
    values: set[int | bytes] = set()
    pos = 0
    end = len(data)
    while pos < end:
        count, pos = read_sleb(data, pos)
        if count > 0:  # a run: one value, repeated
            value, pos = _read_value(data, pos, kind)
            values.add(value)
        elif count < 0:  # -count literal values
            for _ in range(-count):
                value, pos = _read_value(data, pos, kind)
                values.add(value)
        else:  # a run of nulls
            _, pos = read_uleb(data, pos)
    return values


def count_rows(data: bytes, column_type: int, *, limit: int) -> int:
    """How many rows a column holds, without expanding it.

    ``column_type`` is the format's type code (0 group, 1 actor, 2 integer,
    3 delta, 4 boolean, 5 string, 6 value metadata; 7, raw values, has no
    rows of its own and counts as 0).

    Raises:
        ColumnError: the bytes do not decode, or hold more than ``limit`` rows.
    """
    if column_type == 7:
        return 0
    rows = 0
    pos = 0
    end = len(data)
    if column_type == 4:
        while pos < end:
            count, pos = read_uleb(data, pos)
            rows += count
            if rows > limit:
                raise ColumnError(f"a column holds more than {limit} rows")
        return rows
    kind: Kind = "s" if column_type == 5 else "i" if column_type == 3 else "u"
    while pos < end:
        count, pos = read_sleb(data, pos)
        if count > 0:
            rows += count
            _, pos = _read_value(data, pos, kind)
        elif count < 0:
            rows -= count
            if rows > limit:
                break
            for _ in range(-count):
                _, pos = _read_value(data, pos, kind)
        else:
            nulls, pos = read_uleb(data, pos)
            rows += nulls
        if rows > limit:
            raise ColumnError(f"a column holds more than {limit} rows")
    return rows


def decode_delta(data: bytes, *, limit: int) -> list[int | None]:
    """Expand a delta column (RLE of signed differences) into absolute values."""
    absolute = 0
    out: list[int | None] = []
    for delta in decode_rle(data, "i", limit=limit):
        if delta is None:
            out.append(None)
        else:
            assert isinstance(delta, int)
            absolute = min(max(absolute + delta, _I64_MIN), _I64_MAX)  # Rust saturates
            out.append(absolute)
    return out


def encode_delta(values: Sequence[int | None]) -> bytes:
    """Encode absolute values as Automerge's ``DeltaEncoder`` does."""
    absolute = 0
    deltas: list[int | bytes | None] = []
    for value in values:
        if value is None:
            deltas.append(None)
        else:
            deltas.append(min(max(value - absolute, _I64_MIN), _I64_MAX))
            absolute = value
    return encode_rle(deltas, "i")


def decode_boolean(data: bytes, *, limit: int) -> list[bool]:
    """Expand a boolean column (alternating run lengths, starting with False)."""
    out: list[bool] = []
    value = False
    pos = 0
    end = len(data)
    while pos < end:
        count, pos = read_uleb(data, pos)
        if len(out) + count > limit:
            raise ColumnError(f"a column holds more than {limit} rows")
        out.extend([value] * count)
        value = not value
    return out


def encode_boolean(values: Sequence[bool]) -> bytes:
    """Encode booleans as Automerge's ``BooleanEncoder`` does."""
    out = bytearray()
    last = False
    count = 0
    for value in values:
        if value == last:
            count += 1
        else:
            out += uleb(count)
            last = value
            count = 1
    if count:
        out += uleb(count)
    return bytes(out)


def encode_maybe_boolean(values: Sequence[bool]) -> bytes:
    """Like :func:`encode_boolean`, but an all-False column is empty."""
    return encode_boolean(values) if any(values) else b""
