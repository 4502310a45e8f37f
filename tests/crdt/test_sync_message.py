"""Reading Automerge sync messages before the core does (protocol.md §4.1)."""

from __future__ import annotations

import contextlib

import automerge.core as am
import pytest
from hostile import bloom, sync_message
from hypothesis import given
from hypothesis import strategies as st

from autosync_jupyter.crdt.sync_message import (
    SyncMessageRejected,
    acknowledgement,
    read_sync_message,
)

EMPTY_DOC_SYNC = bytes.fromhex("42000001000000020284")  # §1.2 / §4.1


def real_sync_messages() -> tuple[bytes, bytes]:
    """First sync messages of an empty document and of a document with one change."""
    empty = am.Document()
    full = am.Document()
    with full.transaction() as tx:
        tx.put(am.ROOT, "title", am.ScalarType.Str, "hello")
    first_empty = empty.generate_sync_message(am.SyncState())
    first_full = full.generate_sync_message(am.SyncState())
    return bytes(first_empty.encode()), bytes(first_full.encode())


def test_real_first_messages_read_with_and_without_heads() -> None:
    """An empty document's first message has no heads; one with a change has its one head."""
    empty, full = real_sync_messages()
    assert read_sync_message(empty).heads == ()
    assert len(read_sync_message(full).heads) == 1


def test_the_spec_example_reads() -> None:
    """The §4.1 empty-document message: no heads, no changes, capabilities 02 84."""
    msg = read_sync_message(EMPTY_DOC_SYNC)
    assert (msg.version, msg.heads, msg.changes, msg.capabilities) == (0x42, (), (), (2, 0x84))


def test_a_message_carrying_changes_lists_them() -> None:
    """A reply to an empty peer carries the document's changes as entries."""
    doc = am.Document()
    with doc.transaction() as tx:
        tx.put(am.ROOT, "k", am.ScalarType.Int, 1)
    peer = am.Document()
    ours, theirs = am.SyncState(), am.SyncState()
    peer.receive_sync_message(theirs, doc.generate_sync_message(ours))
    doc.receive_sync_message(ours, peer.generate_sync_message(theirs))
    msg = read_sync_message(doc.generate_sync_message(ours).encode())
    assert msg.has_changes and msg.heads == tuple(doc.get_heads())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "version"),
        (b"\x00\x01", "version"),
        (b"\x42\x01" + bytes(31), "heads"),
        (b"\x42\x00\x02" + bytes(40), "needed"),
        (b"\x42\x00\x00\x80\x80\x80\x80\x10", "more summaries"),
        (sync_message(bloom=bloom(1, 10, 2**32 - 1, b"\0\0")), "too many probes"),
        (sync_message(bloom=bloom(1, 10, 0, b"\0\0")), "too many probes"),
        (sync_message(bloom=bloom(5, 0, 7, b"")), "impossible sizes"),
        (sync_message(bloom=bloom(2**33, 10, 7, b"")), "impossible sizes"),
        (sync_message(bloom=bloom(3, 10, 7, b"\0")), "wrong length"),
        (sync_message(bloom=b"\x80"), "malformed"),
        (b"\x42\x00\x00\x00\x01\x05ab", "ends inside a change"),
        (b"\x42\x00\x00\x00\x00\x05ab", "capabilities"),
    ],
    ids=[
        "empty",
        "not-a-sync-message",
        "heads-cut",
        "need-cut",
        "huge-have-count",
        "bloom-2**32-probes",
        "bloom-zero-probes",
        "bloom-without-bits",
        "bloom-entries-beyond-32-bits",
        "bloom-short",
        "bloom-truncated",
        "change-cut",
        "capabilities-cut",
    ],
)
def test_hostile_sync_messages_are_rejected(data: bytes, reason: str) -> None:
    """What would make the core allocate 16 GiB, divide by zero or misread is refused."""
    with pytest.raises(SyncMessageRejected, match=reason):
        read_sync_message(data)


def test_a_bloom_filter_the_core_writes_is_accepted() -> None:
    """A real filter (10 bits per entry, 7 probes) passes: entries round up to whole bytes."""
    assert read_sync_message(sync_message(bloom=bloom(3, 10, 7, b"\0" * 4))).heads == ()


def test_bytes_after_the_capabilities_are_left_for_later_cores() -> None:
    """Later cores may append fields; like the core, we read what we know."""
    assert read_sync_message(EMPTY_DOC_SYNC + b"\x07\x07").capabilities == (2, 0x84)


@given(st.binary(max_size=200))
def test_any_bytes_read_or_raise_rejected(data: bytes) -> None:
    """Arbitrary bytes never raise anything but SyncMessageRejected."""
    with contextlib.suppress(SyncMessageRejected):
        read_sync_message(data)


@pytest.mark.parametrize("concurrent", [False, True])
def test_an_acknowledgement_is_what_the_core_writes(concurrent: bool) -> None:
    """The acknowledgement built without the core equals the core's own answer to a
    peer whose changes it just applied (one head, or two concurrent ones), and the
    peer's core, reading it, has nothing more to say."""
    server, peer = am.Document(), am.Document()
    with server.transaction() as tx:
        tx.put(am.ROOT, "a", am.ScalarType.Int, 1)
    server_state, peer_state = am.SyncState(), am.SyncState()
    for _ in range(10):
        out = server.generate_sync_message(server_state)
        back = peer.generate_sync_message(peer_state)
        if out is not None:
            peer.receive_sync_message(peer_state, out)
        if back is not None:
            server.receive_sync_message(server_state, back)
        if out is None and back is None:
            break
    other = am.Document.load(peer.save())
    other.set_actor(b"other")
    with peer.transaction() as tx:
        tx.put(am.ROOT, "b", am.ScalarType.Int, 2)
    if concurrent:
        with other.transaction() as tx:
            tx.put(am.ROOT, "c", am.ScalarType.Int, 3)
        peer.merge(other)
    for _ in range(10):  # a Bloom filter's false positive can take another round
        message = peer.generate_sync_message(peer_state)
        if message is not None:
            server.receive_sync_message(server_state, message)
        if server.get_heads() == peer.get_heads():
            break
        reply = server.generate_sync_message(server_state)
        if reply is not None:
            peer.receive_sync_message(peer_state, reply)
    heads = server.get_heads()
    assert heads == peer.get_heads() and len(heads) == (2 if concurrent else 1)
    answer = server.generate_sync_message(server_state)
    assert answer is not None
    core = bytes(answer.encode())
    assert acknowledgement(heads, core[0]) == core
    peer.receive_sync_message(peer_state, am.Message.decode(acknowledgement(heads, core[0])))
    assert peer.generate_sync_message(peer_state) is None
