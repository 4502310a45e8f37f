"""Automerge sync messages (the bytes inside a ``sync``/``request``), read and checked.

Layout (protocol.md §4.1): a version byte (``0x42``, or ``0x43`` for the
"v2" form), then heads, needed hashes, "have" summaries (last-sync hashes
and a Bloom filter each), the changes (each entry one or more concatenated
chunks), and optionally the sender's capabilities.

The core trusts these bytes more than it should: a Bloom filter that asks
for 2**32 probes makes it allocate 16 GiB, one whose bit array is empty
makes it divide by zero. :func:`read_sync_message` refuses such messages
before the core sees them, and gives the hub what it needs to decide
(heads, whether changes come along, the change entries).

>>> msg = read_sync_message(bytes.fromhex("42000001000000020284"))
>>> msg.heads, msg.changes, msg.capabilities
((), (), (2, 132))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .columns import ColumnError, read_uleb, uleb

__all__ = [
    "SyncMessage",
    "SyncMessageRejected",
    "acknowledgement",
    "read_sync_message",
    "sync_message_of",
]

_VERSIONS: Final = (0x42, 0x43)
# The core writes 10 bits per entry and 7 probes; anything far beyond is an attack.
_MAX_BLOOM_BITS_PER_ENTRY: Final = 64
_MAX_BLOOM_PROBES: Final = 64
_U32_MAX: Final = 2**32 - 1


class SyncMessageRejected(ValueError):
    """Bytes that are not a sync message the core can safely take; the message says why."""


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """The parts of a sync message the hub looks at.

    Attributes:
        version: ``0x42`` or ``0x43``.
        heads: the sender's heads (32-byte hashes).
        need: hashes the sender asks for.
        changes: the change entries, each one or more concatenated chunks.
        capabilities: the capability codes the sender listed, if any.
        last_sync: the hashes of the first "have" summary (what the sender
            believes both sides hold), None without summaries.
    """

    version: int
    heads: tuple[bytes, ...]
    need: tuple[bytes, ...]
    changes: tuple[bytes, ...]
    capabilities: tuple[int, ...] | None
    last_sync: tuple[bytes, ...] | None = None

    @property
    def has_changes(self) -> bool:
        """Whether the message carries changes."""
        return bool(self.changes)


def _hashes(data: bytes, pos: int, what: str) -> tuple[tuple[bytes, ...], int]:
    count, pos = read_uleb(data, pos)
    end = pos + 32 * count
    if end > len(data):
        raise SyncMessageRejected(f"sync message ends inside its {what}")
    return tuple([data[at : at + 32] for at in range(pos, end, 32)]), end


def _check_bloom(bloom: bytes) -> None:
    if not bloom:
        return  # the empty filter: "I have nothing"
    entries, pos = read_uleb(bloom, 0)
    bits_per_entry, pos = read_uleb(bloom, pos)
    probes, pos = read_uleb(bloom, pos)
    if entries > _U32_MAX or not 1 <= bits_per_entry <= _MAX_BLOOM_BITS_PER_ENTRY:
        raise SyncMessageRejected("sync message has a Bloom filter with impossible sizes")
    if not 1 <= probes <= _MAX_BLOOM_PROBES:
        raise SyncMessageRejected("sync message has a Bloom filter with too many probes")
    size = math.ceil(entries * bits_per_entry / 8)
    if entries and not size:
        raise SyncMessageRejected("sync message has a Bloom filter without bits")
    if len(bloom) - pos != size:
        raise SyncMessageRejected("sync message has a Bloom filter of the wrong length")


def read_sync_message(data: bytes) -> SyncMessage:
    """Parse and check one Automerge sync message.

    Change entries are returned as bytes, unchecked: see
    :mod:`~autosync_jupyter.crdt.changes` for them.

    Raises:
        SyncMessageRejected: the bytes are not a sync message, or hold a
            part the core would misbehave on.
    """
    try:
        return _read(data)
    except ColumnError as exc:
        raise SyncMessageRejected(f"malformed sync message: {exc}") from None


def _read(data: bytes) -> SyncMessage:
    if not data or data[0] not in _VERSIONS:
        raise SyncMessageRejected("not an automerge sync message (unknown version byte)")
    heads, pos = _hashes(data, 1, "heads")
    need, pos = _hashes(data, pos, "needed hashes")
    count, pos = read_uleb(data, pos)
    if count > len(data):
        raise SyncMessageRejected("sync message claims more summaries than it holds")
    last_sync = None
    for _ in range(count):
        hashes, pos = _hashes(data, pos, "last-sync hashes")
        if last_sync is None:
            last_sync = hashes
        length, pos = read_uleb(data, pos)
        if pos + length > len(data):
            raise SyncMessageRejected("sync message ends inside a Bloom filter")
        _check_bloom(data[pos : pos + length])
        pos += length
    count, pos = read_uleb(data, pos)
    if count > len(data):
        raise SyncMessageRejected("sync message claims more changes than it holds")
    changes = []
    for _ in range(count):
        length, pos = read_uleb(data, pos)
        if pos + length > len(data):
            raise SyncMessageRejected("sync message ends inside a change")
        if length:
            changes.append(data[pos : pos + length])
        pos += length
    capabilities: tuple[int, ...] | None = None
    if pos < len(data):
        # Later cores may append more; like the core, read the capabilities
        # and leave whatever follows them.
        count, pos = read_uleb(data, pos)
        if pos + count > len(data):
            raise SyncMessageRejected("sync message ends inside its capabilities")
        capabilities = tuple(data[pos : pos + count])
    return SyncMessage(data[0], heads, need, tuple(changes), capabilities, last_sync)


def sync_message_of(changes: list[bytes]) -> bytes:
    """A sync message that only carries ``changes``: how to give the core chunks to apply.

    (No heads, needs or summaries: received with a throwaway sync state, it
    changes nothing but the document.)

    >>> read_sync_message(sync_message_of([b"x"])).changes
    (b'x',)
    """
    out = bytearray(b"\x42\x00\x00\x00")
    out += uleb(len(changes))
    for change in changes:
        out += uleb(len(change)) + change
    return bytes(out)


def acknowledgement(heads: list[bytes], version: int = 0x42) -> bytes:
    """The core's message to a peer that holds exactly ``heads``, as the core writes it.

    Our heads, nothing needed, one summary saying both sides hold ``heads``
    and nothing since (an empty Bloom filter), no changes: what the core
    sends a peer whose changes it just applied, when it has nothing else
    to send. ``version``: the version byte the core uses with this peer.

    >>> msg = read_sync_message(acknowledgement([bytes(32)]))
    >>> msg.heads == msg.last_sync == (bytes(32),), msg.need, msg.changes
    (True, (), ())
    """
    hashes = uleb(len(heads)) + b"".join(heads)
    return bytes([version]) + hashes + b"\x00\x01" + hashes + b"\x00\x00"
