"""Automerge's column encodings: decoding, canonical encoding, bounded expansion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autosync_jupyter.crdt.columns import (
    ColumnError,
    count_rows,
    decode_boolean,
    decode_delta,
    decode_rle,
    encode_boolean,
    encode_delta,
    encode_maybe_boolean,
    encode_rle,
    read_sleb,
    read_uleb,
    sleb,
    uleb,
)

u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
small = st.integers(0, 3)  # few distinct values: runs happen


@given(u64)
def test_uleb_round_trips(value: int) -> None:
    """Unsigned LEB128 reads back what it wrote, consuming exactly its bytes."""
    data = uleb(value)
    assert read_uleb(data, 0) == (value, len(data))


@given(i64)
def test_sleb_round_trips(value: int) -> None:
    """Signed LEB128 reads back what it wrote, consuming exactly its bytes."""
    data = sleb(value)
    assert read_sleb(data, 0) == (value, len(data))


def test_overlong_leb_reads_but_is_not_what_we_write() -> None:
    """An overlong LEB128 decodes (as the core's does), but re-encodes shorter."""
    assert read_uleb(b"\x80\x00", 0) == (0, 2)
    assert uleb(0) == b"\x00"


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff" * 11, b"\x80" * 9 + b"\x7f"])
def test_bad_uleb_raises_column_error(data: bytes) -> None:
    """Truncated or over-64-bit LEB128 raises ColumnError, never IndexError."""
    with pytest.raises(ColumnError):
        read_uleb(data, 0)


@given(st.lists(st.one_of(st.none(), small), max_size=40))
def test_rle_round_trips(values: list[int | None]) -> None:
    """RLE decodes what it encodes (an all-null column encodes to nothing)."""
    data = encode_rle(values, "u")
    decoded = decode_rle(data, "u", limit=len(values))
    if all(v is None for v in values):
        assert data == b"" and decoded == []
    else:
        # Trailing nulls are written (they follow a value); leading ones too.
        assert decoded == values


@given(st.lists(st.one_of(st.none(), st.sampled_from([b"a", b"bc", b""])), max_size=30))
def test_string_rle_round_trips(values: list[bytes | None]) -> None:
    """String RLE decodes what it encodes."""
    data = encode_rle(values, "s")
    if any(v is not None for v in values):
        assert decode_rle(data, "s", limit=len(values)) == values


def test_rle_is_canonical_as_the_core_writes_it() -> None:
    """Runs of two or more, literal runs otherwise, one null run: the core's choices."""
    assert encode_rle([1, 1, 2, None, None, 3], "u").hex() == "02017f0200027f03"
    assert encode_rle([1, 2, 2], "u").hex() == "7f010202"  # literal [1], then run of 2s
    assert encode_rle([None, 5], "u").hex() == "00017f05"
    assert encode_rle([None, None], "u") == b""


@given(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), max_size=30))
def test_delta_round_trips(values: list[int | None]) -> None:
    """Delta columns decode what they encode."""
    data = encode_delta(values)
    if any(v is not None for v in values):
        assert decode_delta(data, limit=len(values)) == values


@given(st.lists(st.booleans(), max_size=40))
def test_boolean_round_trips(values: list[bool]) -> None:
    """Boolean columns decode what they encode; the maybe-form is empty when all False."""
    assert decode_boolean(encode_boolean(values), limit=len(values)) == values
    assert (encode_maybe_boolean(values) == b"") == (not any(values))


def test_a_huge_run_is_refused_without_expanding() -> None:
    """A run claiming 2**62 rows costs nothing: the limit stops it."""
    bomb = sleb(2**62) + uleb(7)
    with pytest.raises(ColumnError, match="more than 1000 rows"):
        decode_rle(bomb, "u", limit=1000)
    with pytest.raises(ColumnError):
        count_rows(bomb, 2, limit=1000)
    with pytest.raises(ColumnError):
        decode_boolean(uleb(2**62), limit=1000)


@given(st.lists(st.one_of(st.none(), small), max_size=40))
def test_count_rows_matches_decoding(values: list[int | None]) -> None:
    """count_rows says how many rows decode_rle would expand to."""
    data = encode_rle(values, "u")
    assert count_rows(data, 2, limit=100) == len(decode_rle(data, "u", limit=100))


def test_strings_in_columns_must_be_utf8() -> None:
    """A string column with invalid UTF-8 is refused (the core refuses it too)."""
    with pytest.raises(ColumnError, match="UTF-8"):
        decode_rle(sleb(-1) + uleb(2) + b"\xff\xfe", "s", limit=10)
