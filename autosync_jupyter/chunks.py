"""The Automerge binary chunk format: splitting and checking saved bytes.

Saved documents and changes are sequences of chunks,
``magic(4) checksum(4) type(1) uleb128(length) data``, whose checksum is
the first four bytes of SHA-256 over ``type || length || data`` (for a
compressed change, over the inflated change). Reading them here, without
Automerge, lets the store find a torn tail or a damaged file, and lets the
hub salvage a document whose stored history lost a change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Final

__all__ = [
    "Scan",
    "check_chunks",
    "chunk_end",
    "read_uleb128",
    "scan_chunks",
    "split_chunks",
]

_MAGIC: Final = b"\x85\x6f\x4a\x83"
_CHUNK_CHANGE: Final = 1
_CHUNK_COMPRESSED: Final = 2
# A compressed change is checksummed over its inflated form; refuse to inflate
# more than this (a chunk that claims more is treated as damaged).
_MAX_INFLATED: Final = 1 << 30


def read_uleb128(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``pos`` and return (value, end).

    Raises:
        IndexError: the bytes end inside the number.
        ValueError: the number is longer than 64 bits.
    """
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("ULEB128 value longer than 64 bits")


def _read_uleb(data: bytes, pos: int) -> tuple[int, int] | None:
    try:
        return read_uleb128(data, pos)
    except (IndexError, ValueError):
        return None


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def chunk_end(data: bytes, pos: int) -> int | None:
    """Return where the chunk starting at ``pos`` ends, or None if it is not a sound chunk.

    A chunk is ``magic(4) checksum(4) type(1) uleb128(length) data``; the
    checksum is the first four bytes of SHA-256 over ``type || length || data``
    (for a compressed change, over the inflated change it stands for).
    """
    if data[pos : pos + 4] != _MAGIC:
        return None
    chunk_type = data[pos + 8] if pos + 8 < len(data) else None
    length = _read_uleb(data, pos + 9)
    if chunk_type is None or length is None:
        return None
    size, start = length
    end = start + size
    if end > len(data):
        return None
    if chunk_type == _CHUNK_COMPRESSED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            change = inflater.decompress(data[start:end], _MAX_INFLATED)
        except zlib.error:
            return None
        if inflater.unconsumed_tail:
            return None
        digest = hashlib.sha256(bytes([_CHUNK_CHANGE]) + _uleb(len(change)) + change).digest()
    else:
        digest = hashlib.sha256(memoryview(data)[pos + 8 : end]).digest()
    return end if digest[:4] == data[pos + 4 : pos + 8] else None


@dataclasses.dataclass(frozen=True)
class Scan:
    """How a byte string splits into sound chunks and damaged regions."""

    good: list[tuple[int, int]]
    bad: list[tuple[int, int]]

    def good_bytes(self, data: bytes) -> bytes:
        return b"".join(data[start:end] for start, end in self.good)


def scan_chunks(data: bytes) -> Scan:
    """Split ``data`` into sound chunks and the damaged regions between them.

    After a damaged region, scanning resumes at the next magic number that
    starts a sound chunk, so one bad chunk does not hide the ones after it.
    """
    good: list[tuple[int, int]] = []
    bad: list[tuple[int, int]] = []
    pos = 0
    while pos < len(data):
        end = chunk_end(data, pos)
        if end is not None:
            good.append((pos, end))
            pos = end
            continue
        resume = data.find(_MAGIC, pos + 1)
        while resume != -1 and chunk_end(data, resume) is None:
            resume = data.find(_MAGIC, resume + 1)
        resume = len(data) if resume == -1 else resume
        bad.append((pos, resume))
        pos = resume
    return Scan(good, bad)


def check_chunks(data: bytes, what: str) -> bytes:
    """Return ``data`` as bytes if it is one or more sound chunks, else raise ValueError."""
    data = bytes(data)
    scan = scan_chunks(data)
    if not data or scan.bad:
        raise ValueError(f"{what} is not a sequence of automerge chunks (bad magic or checksum)")
    return data


def split_chunks(data: bytes) -> list[bytes]:
    """The sound chunks of ``data``, in order (damaged regions are left out)."""
    return [data[start:end] for start, end in scan_chunks(data).good]
