"""The Automerge binary chunk format: splitting and checking saved bytes.

Saved documents and changes are sequences of chunks,
``magic(4) checksum(4) type(1) uleb128(length) data``, whose checksum is
the first four bytes of SHA-256 over ``type || length || data`` (for a
compressed change, over the inflated change). Reading them here, without
Automerge, lets the store find a torn tail or a damaged file, lets the hub
salvage a document whose stored history lost a change, and bounds what a
compressed chunk from a peer may cost before the core inflates it
(:func:`inflate_bounded`, :func:`check_document_chunk`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Final

from .columns import ColumnError, count_rows, read_uleb, uleb

__all__ = [
    "CHUNK_CHANGE",
    "CHUNK_COMPRESSED",
    "CHUNK_DOCUMENT",
    "COLUMN_DEFLATE",
    "MAGIC",
    "MAX_INFLATED",
    "ChunkRejected",
    "DocumentChunk",
    "DocumentColumns",
    "Scan",
    "check_chunks",
    "check_document_chunk",
    "chunk_end",
    "deflate_change",
    "document_columns",
    "inflate_bounded",
    "scan_chunks",
    "split_chunks",
]

#: The first four bytes of every Automerge chunk.
MAGIC: Final = b"\x85\x6f\x4a\x83"
#: Chunk types: a saved document, a change, a deflated change.
CHUNK_DOCUMENT: Final = 0
CHUNK_CHANGE: Final = 1
CHUNK_COMPRESSED: Final = 2
#: The most bytes this process inflates from chunks it wrote itself (stored
#: or its documents' own changes); a chunk that claims more is treated as
#: damaged. Peers' bytes get the caller's much smaller bounds.
MAX_INFLATED: Final = 1 << 30
#: The bit of a column specification that marks the column as raw deflate.
COLUMN_DEFLATE: Final = 0x08
_COLUMN_TYPE: Final = 0x07
_COLUMN_VALUE: Final = 7


class ChunkRejected(ValueError):
    """Chunk bytes that must not reach the Automerge core; the message says why."""


# Inflating in steps of this size measures a chunk before keeping any of it.
_INFLATE_STEP: Final = 1 << 16


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Inflate raw-deflate ``data``, refusing to produce more than ``limit`` bytes.

    The inflated size is measured first, in steps whose output is dropped, so
    a bomb beyond the limit costs a few KiB of memory, not the limit.

    Raises:
        ChunkRejected: the data is not raw deflate, is truncated, has bytes
            after its end, or inflates beyond ``limit``.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    pending = data
    try:
        while True:
            size += len(inflater.decompress(pending, _INFLATE_STEP))
            if size > limit:
                raise ChunkRejected(f"compressed data inflates to more than {limit} bytes")
            pending = inflater.unconsumed_tail
            if not pending:
                break
        if not inflater.eof or inflater.unused_data:
            raise ChunkRejected("compressed data is truncated or followed by other bytes")
        return zlib.decompress(data, -zlib.MAX_WBITS, max(size, 1))
    except zlib.error as exc:
        raise ChunkRejected(f"compressed data does not inflate: {exc}") from None


def deflate_change(chunk: bytes) -> bytes:
    """The deflated chunk of one uncompressed change chunk: same change, same hash.

    The form in which the core keeps and saves a large change (its own
    compressor may pick other bytes; either loads).
    """
    length, start = read_uleb(chunk, 9)
    # A window no larger than the change: most of zlib's cost on a change of
    # a few hundred bytes is setting up the default 32 KiB one.
    window = min(15, max(9, length.bit_length()))
    packer = zlib.compressobj(6, zlib.DEFLATED, -window, max(1, window - 7))
    body = packer.compress(chunk[start : start + length]) + packer.flush()
    return MAGIC + chunk[4:8] + bytes([CHUNK_COMPRESSED]) + uleb(len(body)) + body


def chunk_end(data: bytes, pos: int) -> int | None:
    """Return where the chunk starting at ``pos`` ends, or None if it is not a sound chunk.

    A chunk is ``magic(4) checksum(4) type(1) uleb128(length) data``; the
    checksum is the first four bytes of SHA-256 over ``type || length || data``
    (for a compressed change, over the inflated change it stands for).
    """
    if data[pos : pos + 4] != MAGIC:
        return None
    if pos + 8 >= len(data):
        return None
    chunk_type = data[pos + 8]
    try:
        size, start = read_uleb(data, pos + 9)
    except ColumnError:
        return None
    end = start + size
    if end > len(data):
        return None
    if chunk_type == CHUNK_COMPRESSED:
        try:
            change = inflate_bounded(data[start:end], MAX_INFLATED)
        except ChunkRejected:
            return None
        digest = hashlib.sha256(bytes([CHUNK_CHANGE]) + uleb(len(change)) + change).digest()
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
        resume = data.find(MAGIC, pos + 1)
        while resume != -1 and chunk_end(data, resume) is None:
            resume = data.find(MAGIC, resume + 1)
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


@dataclasses.dataclass(frozen=True)
class DocumentChunk:
    """What :func:`check_document_chunk` learned about a saved-document chunk.

    Attributes:
        heads: the document's heads.
        changes: how many changes it holds.
        ops: how many operations it holds.
        inflated_size: its size once its compressed columns are inflated.
    """

    heads: tuple[bytes, ...]
    changes: int
    ops: int
    inflated_size: int


def _columns(data: bytes, pos: int) -> tuple[list[tuple[int, int]], int]:
    count, pos = read_uleb(data, pos)
    if count > 64:
        raise ChunkRejected("document chunk has too many columns")
    specs = []
    for _ in range(count):
        spec, pos = read_uleb(data, pos)
        length, pos = read_uleb(data, pos)
        specs.append((spec, length))
    return specs, pos


def check_document_chunk(chunk: bytes, *, max_inflated: int, max_rows: int) -> DocumentChunk:
    """Check a saved-document chunk (type 0) before the core loads it.

    The core inflates a document's compressed columns without a bound and
    walks as many rows as a run-length column claims. Here every column is
    inflated within what is left of ``max_inflated`` and its rows are
    counted without expanding them, against ``max_rows``.

    Raises:
        ChunkRejected: the chunk is damaged, or would cost more than allowed.
    """
    try:
        return _check_document_chunk(chunk, max_inflated, max_rows)
    except (ColumnError, IndexError) as exc:
        raise ChunkRejected(f"document chunk does not decode: {exc}") from None


def _check_document_chunk(chunk: bytes, max_inflated: int, max_rows: int) -> DocumentChunk:
    if len(chunk) < 10 or chunk[:4] != MAGIC or chunk[8] != CHUNK_DOCUMENT:
        raise ChunkRejected("not a document chunk")
    length, start = read_uleb(chunk, 9)
    if start + length != len(chunk):
        raise ChunkRejected("chunk length does not match its header")
    if hashlib.sha256(memoryview(chunk)[8:]).digest()[:4] != chunk[4:8]:
        raise ChunkRejected("bad checksum")
    body = chunk[start:]
    count, pos = read_uleb(body, 0)
    if count > len(body):
        raise ChunkRejected("document chunk claims more actors than it holds")
    for _ in range(count):
        size, pos = read_uleb(body, pos)
        pos += size
    count, pos = read_uleb(body, pos)
    heads = tuple(body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))
    pos += 32 * count
    change_specs, pos = _columns(body, pos)
    op_specs, pos = _columns(body, pos)
    budget = max_inflated - len(body)
    if budget < 0:
        raise ChunkRejected(f"document chunk is larger than {max_inflated} bytes")
    rows = {"changes": 0, "ops": 0}
    for what, specs in (("changes", change_specs), ("ops", op_specs)):
        for spec, size in specs:
            data = body[pos : pos + size]
            if len(data) != size:
                raise ChunkRejected("document chunk ends inside its columns")
            pos += size
            if spec & COLUMN_DEFLATE:
                data = inflate_bounded(data, budget)
                budget -= len(data)
            column_rows = count_rows(data, spec & _COLUMN_TYPE, limit=max_rows)
            if spec & _COLUMN_TYPE != _COLUMN_VALUE:
                rows[what] = max(rows[what], column_rows)
    if pos > len(body):
        raise ChunkRejected("document chunk ends inside its columns")
    return DocumentChunk(heads, rows["changes"], rows["ops"], max_inflated - budget)


@dataclasses.dataclass(frozen=True)
class DocumentColumns:
    """A saved document's actor table and its operation columns, inflated, by specification."""

    actors: list[bytes]
    ops: dict[int, bytes]


def document_columns(chunk: bytes) -> DocumentColumns:
    """Split a saved-document chunk (one ``save()``) into its actors and operation columns.

    For documents this process saved itself; use :func:`check_document_chunk`
    on bytes from elsewhere first.

    Raises:
        ChunkRejected: the bytes are not one document chunk.
    """
    try:
        if chunk[:4] != MAGIC or chunk[8] != CHUNK_DOCUMENT:
            raise ChunkRejected("not a document chunk")
        _, start = read_uleb(chunk, 9)
        body = chunk[start:]
        count, pos = read_uleb(body, 0)
        actors = []
        for _ in range(count):
            size, pos = read_uleb(body, pos)
            actors.append(body[pos : pos + size])
            pos += size
        count, pos = read_uleb(body, pos)
        pos += 32 * count
        change_specs, pos = _columns(body, pos)
        op_specs, pos = _columns(body, pos)
        pos += sum(size for _, size in change_specs)
        ops = {}
        for spec, size in op_specs:
            data = body[pos : pos + size]
            pos += size
            if spec & COLUMN_DEFLATE:
                data = inflate_bounded(data, MAX_INFLATED)
            ops[spec & ~COLUMN_DEFLATE] = data
    except (ColumnError, IndexError) as exc:
        raise ChunkRejected(f"document chunk does not decode: {exc}") from None
    return DocumentColumns(actors, ops)
