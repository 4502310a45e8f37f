"""Bytes an attacker sends: mutated changes with valid checksums, bombs, sync messages.

Shared by the hostile-input tests and ``bench/fuzz_server.py``. Everything
here builds bytes; nothing talks to a server.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Sequence

import automerge.core as am
import cbor2

from autosync_jupyter.crdt.columns import encode_delta, encode_rle, read_uleb, sleb, uleb

MAGIC = b"\x85\x6f\x4a\x83"


def chunk(chunk_type: int, body: bytes, *, checksum_of: bytes | None = None) -> bytes:
    """An Automerge chunk; the checksum is over ``checksum_of`` (default: the chunk itself)."""
    header = bytes([chunk_type]) + uleb(len(body))
    if checksum_of is None:
        checksum_of = header + body
    return MAGIC + hashlib.sha256(checksum_of).digest()[:4] + header + body


def reseal(data: bytes) -> bytes:
    """Give a (mutated) change chunk a length and checksum that match its body."""
    length, start = read_uleb(data, 9)
    body = data[start : start + length] if start + length <= len(data) else data[start:]
    return chunk(data[8], body)


def change_hash(change: bytes) -> bytes:
    """The hash of an uncompressed change chunk."""
    return hashlib.sha256(change[8:]).digest()


def compressed(change: bytes) -> bytes:
    """A change chunk as a compressed (type 2) chunk, as the core writes big ones."""
    length, start = read_uleb(change, 9)
    body = change[start : start + length]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed = deflater.compress(body) + deflater.flush()
    return chunk(2, packed, checksum_of=bytes([1]) + uleb(len(body)) + body)


def deflate_bomb(inflated_size: int) -> bytes:
    """A compressed change chunk that inflates to ``inflated_size`` bytes of zeros.

    Its checksum is right for what it inflates to, as an attacker would make it
    (the core inflates it fully before it can tell it is not a change).
    """
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    step = b"\0" * (1 << 20)
    parts = []
    digest = hashlib.sha256(bytes([1]) + uleb(inflated_size))
    left = inflated_size
    while left:
        piece = step[: min(left, len(step))]
        parts.append(deflater.compress(piece))
        digest.update(piece)
        left -= len(piece)
    parts.append(deflater.flush())
    body = b"".join(parts)
    return MAGIC + digest.digest()[:4] + bytes([2]) + uleb(len(body)) + body


def sync_message(
    changes: Sequence[bytes] = (),
    *,
    heads: Sequence[bytes] = (),
    need: Sequence[bytes] = (),
    bloom: bytes | None = b"",
    version: int = 0x42,
) -> bytes:
    """An Automerge sync message carrying ``changes`` (each entry one or more chunks)."""
    out = bytearray([version])
    out += uleb(len(heads)) + b"".join(sorted(heads))
    out += uleb(len(need)) + b"".join(need)
    if bloom is None:
        out += uleb(0)
    else:
        out += uleb(1) + uleb(0) + uleb(len(bloom)) + bloom
    out += uleb(len(changes))
    for entry in changes:
        out += uleb(len(entry)) + entry
    return bytes(out)


def bloom(entries: int, bits_per_entry: int, probes: int, bits: bytes) -> bytes:
    """A Bloom filter in the sync message's encoding."""
    return uleb(entries) + uleb(bits_per_entry) + uleb(probes) + bits


def mutate(data: bytes, rng: random.Random, *, start: int = 9) -> bytes:
    """Flip, replace, insert or delete a few bytes after ``start``."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if len(out) <= start:
            break
        pos = rng.randrange(start, len(out))
        kind = rng.random()
        if kind < 0.55:
            out[pos] = rng.randrange(256)
        elif kind < 0.75:
            out[pos] ^= 1 << rng.randrange(8)
        elif kind < 0.88:
            out.insert(pos, rng.randrange(256))
        else:
            del out[pos]
    return bytes(out)


def cbor_map_of_empty_maps(count: int) -> bytes:
    """A message whose one field is an array of ``count`` empty maps (a decode bomb)."""
    head = cbor2.dumps({"type": "join", "senderId": "x", "bomb": []})[:-1]
    return head + _array_header(count) + b"\xa0" * count


def _array_header(count: int) -> bytes:
    if count < 24:
        return bytes([0x80 | count])
    if count < 256:
        return bytes([0x98, count])
    if count < 65536:
        return b"\x99" + count.to_bytes(2, "big")
    return b"\x9a" + count.to_bytes(4, "big")


def sample_document() -> am.Document:
    """A document with maps, lists, text, several authors: changes worth mutating."""
    doc = am.Document()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "title", am.ScalarType.Str, "hello")
        items = tx.put_object(am.ROOT, "items", am.ObjType.List)
        text = tx.put_object(am.ROOT, "text", am.ObjType.Text)
        meta = tx.put_object(am.ROOT, "meta", am.ObjType.Map)
        for i, char in enumerate("hello world"):
            tx.insert(text, i, am.ScalarType.Str, char)
        for i in range(5):
            tx.insert(items, i, am.ScalarType.Int, i)
    for i in range(3):
        with doc.transaction() as tx:
            tx.put(am.ROOT, f"k{i}", am.ScalarType.Int, i)
            tx.put(meta, f"m{i}", am.ScalarType.Str, "v")
    other = doc.fork()
    with other.transaction() as tx:
        tx.put(am.ROOT, "other", am.ScalarType.F64, 1.5)
        tx.put(items, 1, am.ScalarType.Str, "overwritten")
    doc.merge(other)
    return doc


def edit_of(doc: am.Document) -> bytes:
    """A real change on top of ``doc`` touching maps, a list and text (not applied to it)."""
    heads = doc.get_heads()
    fork = doc.fork()
    with fork.transaction() as tx:
        items = tx.get(am.ROOT, "items")[1]
        text = tx.get(am.ROOT, "text")[1]
        meta = tx.get(am.ROOT, "meta")[1]
        tx.put(am.ROOT, "title", am.ScalarType.Str, "changed")
        tx.put(meta, "m1", am.ScalarType.Str, "w")
        tx.delete(am.ROOT, "k1")
        tx.insert(items, 0, am.ScalarType.Str, "a")
        tx.delete(items, 3)
        tx.put(items, 2, am.ScalarType.Int, 9)
        tx.insert(text, 0, am.ScalarType.Str, "x")
        tx.delete(text, 3)
    (change,) = fork.get_changes(heads)
    return bytes(change.bytes)


ACTOR = bytes(range(16))
OTHER = bytes(range(1, 17))


def body(
    *,
    deps: list[bytes] | None = None,
    actor: bytes = ACTOR,
    seq: int = 1,
    start_op: int = 1,
    time: int = 0,
    message: bytes = b"",
    others: list[bytes] | None = None,
    columns: list[tuple[int, bytes]] | None = None,
    extra: bytes = b"",
) -> bytes:
    """A change chunk's body, field by field (columns as (specification, bytes))."""
    deps = deps or []
    others = others or []
    columns = columns if columns is not None else []
    out = uleb(len(deps)) + b"".join(deps) + uleb(len(actor)) + actor
    out += uleb(seq) + uleb(start_op) + sleb(time) + uleb(len(message)) + message
    out += uleb(len(others)) + b"".join(uleb(len(o)) + o for o in others)
    out += uleb(len(columns)) + b"".join(uleb(s) + uleb(len(d)) for s, d in columns)
    return out + b"".join(d for _, d in columns) + extra


def op_columns(
    *,
    key: bytes = b"title",
    action: int = 1,
    meta: int = (2 << 4) | 6,
    raw: bytes = b"hi",
    preds: list[tuple[int, int]] | None = None,
    insert: bool = False,
) -> list[tuple[int, bytes]]:
    preds = preds or []
    columns = [
        (0x15, encode_rle([key], "s")),
        (0x34, uleb(0) + uleb(1) if insert else uleb(1)),
        (0x42, encode_rle([action], "u")),
        (0x56, encode_rle([meta], "u")),
        (0x57, raw),
        (0x70, encode_rle([len(preds)], "u")),
    ]
    if preds:
        columns.append((0x71, encode_rle([a for a, _ in preds], "u")))
        columns.append((0x73, encode_delta([c for _, c in preds])))
    return [c for c in columns if c[1]]
