"""Hostile peers against the sans-I/O hub: refused, isolated, bounded (issue 10).

Each test drives the hub as a transport would, with a store made of the
writes the hub asked for, and checks that the attacker is cut off while the
document and the other peers carry on.
"""

from __future__ import annotations

import logging
from typing import Any

import automerge.core as am
import pytest
from hostile import bloom, body, chunk, deflate_bomb, op_columns, sync_message
from test_hub import Client, World, create_doc, edit, stored_into

import autosync_jupyter.core.hub as hub_module
from autosync_jupyter.core.hub import Effects, Hub, HubLimits
from autosync_jupyter.core.protocol import (
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    PeerMetadata,
    Request,
    Sync,
)
from autosync_jupyter.crdt.guard import Admission, Limits
from autosync_jupyter.crdt.values import to_py
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id


class StoredWorld(World):
    """A World whose hub loads documents from what it wrote (a store in a list)."""

    def deliver(self, fx: Effects) -> None:
        loads, fx.load = fx.load, []
        self.loads.extend(loads)
        super().deliver(fx)
        for doc_id in loads:
            stored = b"".join(data for d, data in self.writes if d == doc_id)
            self.deliver(stored_into(self.hub, doc_id, stored or None))


def make_world(**options: Any) -> StoredWorld:
    written: list[tuple[DocumentId, bytes]] = []

    class Ids:
        def __contains__(self, doc_id: object) -> bool:
            return any(d == doc_id for d, _ in written)

    world = StoredWorld(Hub(peer_id=PeerId("server"), storage_id="s", stored=Ids(), **options))
    world.writes = written
    return world


def raw_sync(client: Client, doc_id: DocumentId, data: bytes) -> None:
    client.send(Sync(client.peer_id, PeerId("server"), doc_id, data))


def shared_doc(world: StoredWorld) -> tuple[Client, Client, DocumentId]:
    """Alice creates a document, Bob opens it; both in sync with the server."""
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, n=1)
    bob.sync(doc_id, request=True)
    assert to_py(bob.docs[doc_id]) == {"n": 1}
    return alice, bob, doc_id


def still_syncs(alice: Client, bob: Client, doc_id: DocumentId, value: int) -> None:
    """An edit of Alice's still reaches Bob through the server."""
    edit(alice.docs[doc_id], n=value)
    alice.sync(doc_id)
    assert to_py(bob.docs[doc_id])["n"] == value


def closed_with(client: Client, code: int, text: str) -> None:
    assert client.closed and client.closed[0][0] == code, client.closed
    errors = client.of_type(Error)
    assert errors and text in errors[-1].message, errors


# -- 1. deflate bombs ------------------------------------------------------------------


def test_a_deflate_bomb_is_refused_as_too_big() -> None:
    """A compressed change inflating beyond the message limit: error and 1009, nothing kept."""
    world = make_world(limits=HubLimits.for_message_size(1 << 20))
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    raw_sync(mallory, doc_id, sync_message([deflate_bomb(8 << 20)], heads=[b"\1" * 32]))
    closed_with(mallory, 1009, "inflates to more than")
    still_syncs(alice, bob, doc_id, 2)


def test_a_bloom_filter_asking_2_to_the_32_probes_is_refused() -> None:
    """The core would allocate 16 GiB for it (measured: 16.4 GB peak); refused first."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    raw_sync(mallory, doc_id, sync_message(bloom=bloom(1, 10, 2**32 - 1, b"\0\0")))
    closed_with(mallory, 1002, "too many probes")
    still_syncs(alice, bob, doc_id, 2)


# -- 3. panics ----------------------------------------------------------------------------


def panicking_change(doc: am.Document) -> bytes:
    """A change whose predecessor names actor index 104: the core panics (index out of bounds)."""
    start = max(c.max_op for c in doc.get_changes([])) + 1
    return chunk(
        1,
        body(
            deps=sorted(doc.get_heads()),
            actor=bytes(16),
            seq=1,
            start_op=start,
            columns=op_columns(key=b"n", preds=[(104, 1)]),
        ),
    )


def test_a_panic_past_the_checks_costs_only_its_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a change that panics the core got through, the document is reloaded from storage,
    the sender is cut off, and everyone else carries on (also on other documents)."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    other = create_doc(alice, other=1)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    attack = panicking_change(mallory.docs[doc_id])
    # Simulate a hole in the checks: the change reaches the core unchecked.
    monkeypatch.setattr(hub_module, "admit", lambda *args: Admission())
    raw_sync(mallory, doc_id, sync_message([attack], heads=[b"\2" * 32]))
    closed_with(mallory, 1002, "invalid sync message")
    assert world.loads == [doc_id]  # reloaded from what was stored
    still_syncs(alice, bob, doc_id, 3)
    carol = world.client("carol")
    carol.sync(doc_id, request=True)
    carol.sync(other, request=True)
    assert to_py(carol.docs[doc_id]) == {"n": 3}
    assert to_py(carol.docs[other]) == {"other": 1}


def test_the_same_panic_is_refused_by_the_checks() -> None:
    """Without the simulated hole, the change never reaches the core: no reload at all."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    raw_sync(mallory, doc_id, sync_message([panicking_change(mallory.docs[doc_id])]))
    closed_with(mallory, 1002, "names an actor the change lacks")
    assert world.loads == []
    still_syncs(alice, bob, doc_id, 2)


# -- 4. poisoning -------------------------------------------------------------------------


def poisoning_change(doc: am.Document) -> bytes:
    """A put on key "tiLle" whose predecessor is the op of another key (the fuzzer's find).

    The core applies it, but a save of the document no longer loads.
    """
    first = doc.get_changes([])[0]
    own = [c for c in doc.get_changes([]) if c.actor_id == first.actor_id]
    target = doc.get(am.ROOT, "n")
    assert target is not None
    return chunk(
        1,
        body(
            deps=sorted(doc.get_heads()),
            actor=first.actor_id,
            seq=len(own) + 1,
            start_op=max(c.max_op for c in doc.get_changes([])) + 1,
            columns=op_columns(key=b"m", preds=[(0, 1)]),
        ),
    )


def test_a_change_that_would_poison_the_document_is_refused() -> None:
    """Refused before the core: the document stays loadable, stored bytes unchanged."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    attack = poisoning_change(mallory.docs[doc_id])
    victim = mallory.docs[doc_id].fork()
    victim.receive_sync_message(am.SyncState(), am.Message.decode(sync_message([attack])))
    with pytest.raises(Exception, match="mismatching heads"):
        am.Document.load(victim.save())  # what would have happened
    writes = len(world.writes)
    raw_sync(mallory, doc_id, sync_message([attack], heads=[b"\3" * 32]))
    closed_with(mallory, 1002, "not on the key it writes")
    assert len(world.writes) == writes
    stored = b"".join(d for i, d in world.writes if i == doc_id)
    am.Document.load(am.Document.load(stored).save())
    still_syncs(alice, bob, doc_id, 2)


def test_a_poisoned_orphan_is_caught_when_completed_and_only_its_sender_goes() -> None:
    """A bad change sent before its dependency is checked when the dependency arrives.

    Alice's change (the dependency) is legit: she stays connected and resyncs
    after the document is rolled back; Mallory (who sent the bad one) goes.
    """
    world = make_world()
    alice, _bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    ahead = mallory.docs[doc_id].fork()
    edit(ahead, n=5)  # Alice will make the same change; Mallory builds on it
    (dependency,) = ahead.get_changes(mallory.docs[doc_id].get_heads())
    attack = poisoning_change(ahead)
    raw_sync(mallory, doc_id, sync_message([attack], heads=[b"\4" * 32]))
    assert not mallory.closed  # waits as an orphan
    alice.docs[doc_id] = ahead.fork()
    alice.docs[doc_id].set_actor(ahead.get_actor())
    raw_sync(alice, doc_id, sync_message([bytes(dependency.bytes)], heads=[b"\5" * 32]))
    closed_with(mallory, 1002, "not on the key it writes")
    assert not alice.closed
    stored = b"".join(d for i, d in world.writes if i == doc_id)
    assert "m" not in to_py(am.Document.load(am.Document.load(stored).save()))


# -- 5. memory held for peers -----------------------------------------------------------


def test_made_up_heads_leave_nothing_behind() -> None:
    """Sync messages claiming heads that never come: forgotten when the peer goes."""
    world = make_world()
    mallory = world.client("mallory")
    for i in range(500):
        raw_sync(mallory, generate_document_id(), sync_message(heads=[bytes([i % 256]) * 32]))
    assert len(world.hub._docs) == 500
    world.deliver(world.hub.close_connection(mallory.conn))
    assert world.hub._docs == {}


def test_documents_without_data_per_connection_are_bounded() -> None:
    """Beyond the limit of open documents holding nothing, the peer is refused (1008)."""
    limits = HubLimits(Limits(1 << 20, 10_000), orphan_bytes=1 << 20, documents_without_data=50)
    world = make_world(limits=limits)
    mallory = world.client("mallory")
    for i in range(51):
        raw_sync(mallory, generate_document_id(), sync_message(heads=[bytes([i]) * 32]))
    closed_with(mallory, 1008, "more than 50 open documents")
    assert world.hub._docs == {}


def orphan_of(doc: am.Document, n: int) -> bytes:
    """A real change depending on one the server never gets."""
    fork = doc.fork()
    edit(fork, n=1000 + n)
    edit(fork, n=2000 + n)
    first, second = fork.get_changes(doc.get_heads())
    del first
    return bytes(second.bytes)


def test_orphans_go_with_the_peer_that_left_them() -> None:
    """Changes whose dependency never arrives are dropped when their sender disconnects."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    raw_sync(
        mallory, doc_id, sync_message([orphan_of(mallory.docs[doc_id], 1)], heads=[b"\6" * 32])
    )
    assert world.hub._docs[doc_id].orphans
    world.deliver(world.hub.close_connection(mallory.conn))
    assert not world.hub._docs[doc_id].orphans and world.loads == [doc_id]
    still_syncs(alice, bob, doc_id, 2)


def test_orphan_bytes_per_connection_are_bounded() -> None:
    """Beyond orphan_bytes, the sender is cut off (1009) and the orphans dropped."""
    limits = HubLimits(Limits(1 << 20, 10_000), orphan_bytes=500)
    world = make_world(limits=limits)
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    for n in range(20):
        if mallory.closed:
            break
        orphan = orphan_of(mallory.docs[doc_id], n)
        raw_sync(mallory, doc_id, sync_message([orphan], heads=[bytes([n]) * 32]))
    closed_with(mallory, 1009, "dependencies never arrived")
    assert not world.hub._docs[doc_id].orphans
    still_syncs(alice, bob, doc_id, 2)


# -- 6. impersonation ----------------------------------------------------------------------


def test_an_ephemeral_in_another_peers_name_is_dropped() -> None:
    """Mallory cannot speak as Alice; Alice's own broadcasts still go through after.

    Dropped, not punished: a stock JS repo sends every ephemeral it gets
    back to its other peers (us), in the author's name.
    """
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    mallory = world.client("mallory")
    mallory.sync(doc_id, request=True)
    forged = Ephemeral(PeerId("alice"), PeerId("server"), doc_id, "s1", 2**53 - 1, b"\xa0")
    mallory.send(forged)
    assert bob.of_type(Ephemeral) == [] and not mallory.closed
    alice.send(Ephemeral(PeerId("alice"), PeerId("server"), doc_id, "s1", 1, b"\xa0"))
    assert [m.sender_id for m in bob.of_type(Ephemeral)] == ["alice"]
    # Nor in the hub's own name; other messages in another's name still cut the link.
    mallory.send(Ephemeral(PeerId("server"), PeerId("server"), doc_id, "s9", 1, b"\xa0"))
    assert [m.sender_id for m in bob.of_type(Ephemeral)] == ["alice"] and not mallory.closed
    mallory.send(DocUnavailable(PeerId("alice"), PeerId("server"), doc_id))
    closed_with(mallory, 1008, "senderId")


def test_a_live_connections_peer_id_cannot_be_taken() -> None:
    """A second join with a live peer's id: the holder answers the ping and keeps it."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    thief = world.client("alice", join=False)
    thief.join()
    closed_with(thief, 1008, "peer id in use")
    assert not alice.closed
    still_syncs(alice, bob, doc_id, 2)


def test_a_dead_connections_peer_id_is_taken_over() -> None:
    """The same join after the holder's socket dropped unnoticed: the newcomer takes over."""
    world = make_world()
    alice, bob, doc_id = shared_doc(world)
    again = world.reconnect(alice)
    assert alice.closed and not again.closed
    again.sync(doc_id)
    still_syncs(again, bob, doc_id, 2)


def test_messages_wait_while_the_holder_is_pinged() -> None:
    """What the newcomer sends meanwhile waits, then runs in order once the probe ends."""
    world = make_world()
    alice, _bob, doc_id = shared_doc(world)
    hub = world.hub
    conn = hub.open_connection()
    fx = hub.receive(conn, hostile_join("alice"))
    assert fx.probe == [(alice.conn, conn)] and hub.is_waiting(conn)
    data = am.Document().generate_sync_message(am.SyncState()).encode()
    assert not hub.receive(conn, encode_request("alice", doc_id, data)).send
    fx = hub.probe_result(conn, live=False)
    kinds = [type(m).__name__ for c, m in fx.send if c == conn]
    assert kinds[0] == "Peer" and "Sync" in kinds and not hub.is_waiting(conn)


def hostile_join(name: str) -> bytes:
    from autosync_jupyter.core.protocol import encode

    return encode(Join(PeerId(name), peer_metadata=PeerMetadata(is_ephemeral=True)))


def encode_request(name: str, doc_id: DocumentId, data: bytes) -> bytes:
    from autosync_jupyter.core.protocol import encode

    return encode(Request(PeerId(name), PeerId("server"), doc_id, data))


@pytest.mark.parametrize(("same", "taken"), [(True, True), (False, False)])
def test_with_authentication_only_the_same_identity_takes_over(same: bool, taken: bool) -> None:
    """Authenticated: the same user takes its peer id back at once; another never does."""
    hub = Hub(peer_id=PeerId("server"))
    first = hub.open_connection(identity={"iss": "idp", "sub": "alice"})
    hub.receive(first, hostile_join("p"))
    who = "alice" if same else "mallory"
    second = hub.open_connection(identity={"iss": "idp", "sub": who})
    fx = hub.receive(second, hostile_join("p"))
    assert not fx.probe
    closed = {conn for conn, _, _ in fx.close}
    assert (first in closed) is taken and (second in closed) is not taken


# -- 7. small ones --------------------------------------------------------------------------


def test_close_reasons_fit_a_close_frame_whatever_the_text() -> None:
    """A long non-ASCII reason is cut to 123 bytes of valid UTF-8 (else tornado raises)."""
    world = make_world()
    mallory = world.client("mallory")
    data = am.Document().generate_sync_message(am.SyncState()).encode()
    mallory.send(Request(PeerId("é" * 300), PeerId("server"), generate_document_id(), data))
    reason = mallory.closed[0][1]
    assert len(reason.encode("utf-8")) <= 123
    reason.encode("utf-8").decode("utf-8")


def test_a_peers_text_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """An error message or peer id with newlines is logged escaped, on one line."""
    world = make_world()
    caplog.set_level(logging.INFO, logger="autosync_jupyter.hub")
    mallory = world.client("mal\nlory")
    mallory.send(Error(PeerId("mal\nlory"), "boom\nCRITICAL forged line"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("forged" in m for m in messages)
    assert all("\n" not in m for m in messages)


@pytest.mark.parametrize(("verified", "seen"), [(True, True), (False, False), ("true", False)])
def test_share_policies_see_only_verified_emails(verified: object, seen: bool) -> None:
    """peer.email is the email only when the provider verified it (the JSON true)."""
    from autosync_jupyter.core.hub import PeerInfo

    peer = PeerInfo(PeerId("p"), identity={"email": "a@b.c", "email_verified": verified})
    assert (peer.email == "a@b.c") is seen
