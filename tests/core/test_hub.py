"""The sans-I/O hub, driven message by message (protocol.md §2, §3.9, §7, §8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import automerge.core as am
import cbor2
import pytest
from websockets.frames import CloseCode

from autosync_jupyter.core.hub import Effects, Hub, PeerInfo
from autosync_jupyter.core.protocol import (
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    Message,
    Peer,
    PeerMetadata,
    Request,
    Sync,
    encode,
)
from autosync_jupyter.crdt.sync_message import read_sync_message
from autosync_jupyter.crdt.values import new_document, to_py
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id
from autosync_jupyter.storage.salvage import load_document


@dataclass
class Client:
    """A minimal automerge-repo client: one connection, its documents, its inbox."""

    hub: Hub
    peer_id: PeerId
    conn: int
    docs: dict[DocumentId, am.Document] = field(default_factory=dict)
    states: dict[DocumentId, am.SyncState] = field(default_factory=dict)
    inbox: list[Message] = field(default_factory=list)
    closed: list[tuple[int, str]] = field(default_factory=list)
    # Whether it would answer a ping (False: its socket dropped unnoticed).
    alive: bool = True

    def send(self, msg: Message) -> None:
        self.world.deliver(self.hub.receive(self.conn, encode(msg)))

    world: World = field(init=False)

    def join(self, **meta: Any) -> None:
        self.send(Join(self.peer_id, peer_metadata=PeerMetadata(**meta) if meta else None))

    def sync(self, doc_id: DocumentId, *, request: bool = False) -> None:
        """Send this client's next sync message for a document, if any."""
        doc = self.docs.setdefault(doc_id, am.Document())
        state = self.states.setdefault(doc_id, am.SyncState())
        message = doc.generate_sync_message(state)
        if message is not None:
            cls = Request if request else Sync
            self.send(cls(self.peer_id, self.world.hub.peer_id, doc_id, message.encode()))

    def of_type(self, kind: type) -> list[Any]:
        return [m for m in self.inbox if isinstance(m, kind)]


class World:
    """Routes hub effects to clients and runs the sync loop to quiescence."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.clients: dict[int, Client] = {}
        self.writes: list[tuple[DocumentId, bytes]] = []
        self.loads: list[DocumentId] = []

    def client(self, name: str, *, join: bool = True, **meta: Any) -> Client:
        client = Client(self.hub, PeerId(name), self.hub.open_connection())
        client.world = self
        self.clients[client.conn] = client
        if join:
            client.join(**meta)
        return client

    def reconnect(self, client: Client) -> Client:
        """Open a new connection for the same peer id (the JS reconnect after a drop)."""
        client.alive = False
        new = Client(self.hub, client.peer_id, self.hub.open_connection(), client.docs)
        new.world = self
        self.clients[new.conn] = new
        new.join()
        return new

    def deliver(self, fx: Effects) -> None:
        self.writes.extend(fx.writes)
        self.loads.extend(fx.load)
        for conn, msg in fx.send:
            client = self.clients.get(conn)
            if client is None:
                continue
            client.inbox.append(msg)
            if isinstance(msg, Sync) and not client.closed:
                doc = client.docs.setdefault(msg.document_id, am.Document())
                state = client.states.setdefault(msg.document_id, am.SyncState())
                doc.receive_sync_message(state, am.Message.decode(msg.data))
                client.sync(msg.document_id)
        for conn, code, reason in fx.close:
            client = self.clients.get(conn)
            if client is not None:
                client.closed.append((code, reason))
        for holder, newcomer in fx.probe:
            # A client that is not "alive" is one whose socket dropped silently.
            alive = self.clients[holder].alive if holder in self.clients else False
            self.deliver(self.hub.probe_result(newcomer, alive))
        if self.hub.pending_propagation():
            self.deliver(self.hub.propagate())


def stored_into(hub: Hub, doc_id: DocumentId, data: bytes | None) -> Effects:
    """Hand ``hub`` what a store holding ``data`` gives, as the runtime does."""
    if not data:
        return hub.document_loaded(doc_id, None)
    loaded = load_document(data)
    if loaded.document is None:
        return hub.document_load_failed(doc_id, "its stored bytes do not load")
    return hub.document_loaded(doc_id, loaded.document, waiting=loaded.waiting)


def make_world(**options: Any) -> World:
    return World(Hub(peer_id=PeerId("server"), storage_id="server-storage", **options))


def edit(doc: am.Document, **values: Any) -> None:
    with doc.transaction() as tx:
        for key, value in values.items():
            tx.put(am.ROOT, key, am.ScalarType.Int, value)


def create_doc(client: Client, **values: Any) -> DocumentId:
    doc_id = generate_document_id()
    client.docs[doc_id] = new_document(values)
    client.sync(doc_id)
    return doc_id


# -- handshake ------------------------------------------------------------------


def test_join_is_answered_with_peer_first() -> None:
    """`join` gets `peer` (first frame) with the server's storage id and version 1."""
    world = make_world()
    alice = world.client("alice")
    assert isinstance(alice.inbox[0], Peer)
    peer = alice.inbox[0]
    assert peer.target_id == "alice" and peer.selected_protocol_version == "1"
    assert peer.peer_metadata == PeerMetadata(storage_id="server-storage", is_ephemeral=False)


def test_ephemeral_hub_announces_no_storage_id() -> None:
    """A hub without storage id says isEphemeral."""
    world = World(Hub(peer_id=PeerId("s")))
    alice = world.client("alice")
    assert alice.inbox[0].peer_metadata == PeerMetadata(storage_id=None, is_ephemeral=True)


def test_unsupported_version_gets_error_and_close() -> None:
    """`join` offering only version 2 gets one `error` with targetId, then a close; no `peer`."""
    world = make_world()
    bob = world.client("bob", join=False)
    bob.send(Join(PeerId("bob"), supported_protocol_versions=("2",)))
    assert [type(m) for m in bob.inbox] == [Error]
    assert bob.inbox[0].target_id == "bob"
    assert bob.closed and bob.closed[0][0] == CloseCode.PROTOCOL_ERROR


def test_version_list_containing_one_is_accepted() -> None:
    """`["2", "1"]` selects "1"; a missing list also does."""
    world = make_world()
    a = world.client("a", join=False)
    a.send(Join(PeerId("a"), supported_protocol_versions=("2", "1")))
    b = world.client("b", join=False)
    b.send(Join(PeerId("b"), supported_protocol_versions=None))
    assert isinstance(a.inbox[0], Peer) and isinstance(b.inbox[0], Peer)


def test_message_before_join_is_refused() -> None:
    """A `sync` before `join` gets "Expected join message" and a close; nothing is stored."""
    world = make_world()
    eve = world.client("eve", join=False)
    doc = new_document({"x": 1})
    msg = doc.generate_sync_message(am.SyncState())
    eve.send(Sync(PeerId("eve"), PeerId("server"), generate_document_id(), msg.encode()))
    assert isinstance(eve.inbox[0], Error) and "Expected join" in eve.inbox[0].message
    assert eve.closed and not world.writes


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe",
        bytes.fromhex("9b0000000100000000"),
        b"\x05",
        b"\xf6",
        cbor2.dumps({"no": "type"}),
        cbor2.dumps({"type": "join"}) + b"\x00",
    ],
    ids=["garbage", "huge-array", "int", "null", "no-type", "trailing"],
)
def test_malformed_input_closes_only_that_connection(payload: bytes) -> None:
    """Malformed CBOR gets an error and a close for its sender; other peers keep syncing."""
    world = make_world()
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, n=1)
    bob.send(
        Request(
            PeerId("bob"),
            PeerId("server"),
            doc_id,
            am.Document().generate_sync_message(am.SyncState()).encode(),
        )
    )
    eve = world.client("eve", join=False)
    world.deliver(world.hub.receive(eve.conn, payload))
    assert eve.closed and isinstance(eve.inbox[-1], Error)
    edit(alice.docs[doc_id], n=2)
    alice.sync(doc_id)
    assert to_py(bob.docs[doc_id]) == {"n": 2}


def test_empty_frame_is_ignored() -> None:
    """A zero-length frame neither errors nor closes."""
    world = make_world()
    alice = world.client("alice")
    fx = world.hub.receive(alice.conn, b"")
    assert not fx and not alice.closed


def test_invalid_document_id_closes_with_error() -> None:
    """A `request` with a path-like document id gets an error and a close, no write."""
    world = make_world()
    eve = world.client("eve")
    raw = cbor2.dumps(
        {
            "type": "request",
            "senderId": "eve",
            "targetId": "server",
            "documentId": "../../etc",
            "data": b"B\x00",
        }
    )
    world.deliver(world.hub.receive(eve.conn, raw))
    assert eve.closed and isinstance(eve.inbox[-1], Error) and not world.writes


def test_unknown_type_is_ignored_and_connection_stays() -> None:
    """An unknown message type is ignored; a following request still works."""
    world = make_world()
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, k=7)
    world.deliver(world.hub.receive(bob.conn, cbor2.dumps({"type": "hello", "senderId": "bob"})))
    assert not bob.closed
    bob.sync(doc_id, request=True)
    assert to_py(bob.docs[doc_id]) == {"k": 7}


def test_spoofed_sender_is_refused() -> None:
    """A message whose senderId is not the connection's peer gets an error and a 1008 close."""
    world = make_world()
    alice, mallory = world.client("alice"), world.client("mallory")
    doc_id = create_doc(alice, a=1)
    data = am.Document().generate_sync_message(am.SyncState()).encode()
    mallory.send(Request(PeerId("alice"), PeerId("server"), doc_id, data))
    assert mallory.closed == [(1008, mallory.closed[0][1])]
    assert "senderId" in mallory.of_type(Error)[0].message
    assert not alice.closed and not alice.of_type(Error)


def test_sync_for_another_target_is_ignored() -> None:
    """A `sync` addressed to some other peer id gets no reply."""
    world = make_world()
    alice = world.client("alice")
    doc = new_document({"a": 1})
    msg = doc.generate_sync_message(am.SyncState())
    n = len(alice.inbox)
    alice.send(Sync(PeerId("alice"), PeerId("not-me"), generate_document_id(), msg.encode()))
    assert len(alice.inbox) == n and not world.writes


# -- documents ------------------------------------------------------------------


def test_document_created_by_one_peer_is_found_by_another() -> None:
    """A `sync` for an unknown id creates the document; a second peer's `request` gets it."""
    world = make_world()
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, x=1)
    assert world.writes and world.writes[0][0] == doc_id
    bob.sync(doc_id, request=True)
    assert to_py(bob.docs[doc_id]) == {"x": 1}
    assert not bob.of_type(DocUnavailable)


def test_unknown_request_gets_doc_unavailable_and_nothing_written() -> None:
    """A `request` for an unknown id → `doc-unavailable`, no write (JS semantics)."""
    world = make_world()
    bob = world.client("bob")
    doc_id = generate_document_id()
    bob.sync(doc_id, request=True)
    assert [m.document_id for m in bob.of_type(DocUnavailable)] == [doc_id]
    assert not world.writes


def test_late_arrival_is_pushed_to_earlier_requester() -> None:
    """A peer told `doc-unavailable` receives the document when it arrives later."""
    world = make_world()
    bob, alice = world.client("bob"), world.client("alice")
    doc_id = generate_document_id()
    bob.sync(doc_id, request=True)
    assert bob.of_type(DocUnavailable)
    alice.docs[doc_id] = new_document({"late": True})
    alice.sync(doc_id)
    assert to_py(bob.docs[doc_id]) == {"late": True}


def test_create_on_request_makes_empty_document() -> None:
    """R mode: a request for an unknown id creates and stores an empty document."""
    world = make_world(create_on_request=True)
    bob = world.client("bob")
    doc_id = generate_document_id()
    bob.sync(doc_id, request=True)
    assert not bob.of_type(DocUnavailable)
    assert bob.of_type(Sync) and world.writes[0][0] == doc_id


def test_changes_propagate_to_other_peers_and_converge() -> None:
    """Concurrent edits from three peers converge on all of them and the server."""
    world = make_world()
    a, b, c = world.client("a"), world.client("b"), world.client("c")
    doc_id = create_doc(a, start=0)
    b.sync(doc_id, request=True)
    c.sync(doc_id, request=True)
    for i in range(20):
        for client, key in ((a, "a"), (b, "b"), (c, "c")):
            edit(client.docs[doc_id], **{key: i})
            client.sync(doc_id)
    heads = {tuple(sorted(x.docs[doc_id].get_heads())) for x in (a, b, c)}
    assert len(heads) == 1
    assert tuple(sorted(world.hub.document(doc_id).get_heads())) in heads
    assert to_py(a.docs[doc_id]) == {"start": 0, "a": 19, "b": 19, "c": 19}


def test_writes_hold_exactly_the_new_changes() -> None:
    """Each write carries only changes not written before, and they rebuild the document."""
    world = make_world()
    alice = world.client("alice")
    doc_id = create_doc(alice, v=0)
    for i in range(1, 5):
        edit(alice.docs[doc_id], v=i)
        alice.sync(doc_id)
    rebuilt = am.Document.load(b"".join(data for _, data in world.writes))
    assert to_py(rebuilt) == {"v": 4}
    assert len(world.writes) == 5


def test_stored_document_is_loaded_before_any_reply() -> None:
    """A request for a stored document parks until it is loaded, then gets data, not unavailable."""
    stored_doc = new_document({"from": "disk"})
    doc_id = generate_document_id()
    world = World(Hub(peer_id=PeerId("server"), storage_id="s", stored={doc_id}))
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    assert world.loads == [doc_id]
    assert not bob.of_type(Sync) and not bob.of_type(DocUnavailable)
    world.deliver(stored_into(world.hub, doc_id, stored_doc.save()))
    assert to_py(bob.docs[doc_id]) == {"from": "disk"}
    assert not bob.of_type(DocUnavailable)


def test_messages_behind_a_load_keep_their_order() -> None:
    """Messages arriving while a load is pending are handled after it, in order."""
    doc_id = generate_document_id()
    world = World(Hub(peer_id=PeerId("server"), storage_id="s", stored={doc_id}))
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    other = generate_document_id()
    bob.sync(other, request=True)  # parked behind the load
    assert not bob.of_type(DocUnavailable)
    world.deliver(stored_into(world.hub, doc_id, new_document({"a": 1}).save()))
    assert [m.document_id for m in bob.of_type(DocUnavailable)] == [other]


def test_corrupt_stored_document_is_unavailable_and_never_written() -> None:
    """Stored bytes Automerge cannot load make the document unavailable; no write happens."""
    doc_id = generate_document_id()
    world = World(Hub(peer_id=PeerId("server"), storage_id="s", stored={doc_id}))
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    world.deliver(stored_into(world.hub, doc_id, b"\x85oJ\x83garbage"))
    assert bob.of_type(DocUnavailable)
    alice = world.client("alice")
    alice.docs[doc_id] = new_document({"x": 1})
    alice.sync(doc_id)
    assert not world.writes


# -- reconnects -----------------------------------------------------------------


def test_reconnect_replaces_old_connection_and_resumes() -> None:
    """A second connection with the same peer id closes the first and syncs afresh."""
    world = make_world()
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, n=0)
    bob.sync(doc_id, request=True)
    bob2 = world.reconnect(bob)
    assert bob.closed and bob.closed[0][0] == CloseCode.NORMAL_CLOSURE
    assert isinstance(bob2.inbox[0], Peer)
    # A message still arriving on the old socket is dropped.
    assert not world.hub.receive(bob.conn, encode(Join(PeerId("bob"))))
    bob2.states.clear()  # the JS client resets its sync state too
    edit(bob2.docs[doc_id], n=5)
    bob2.sync(doc_id)
    assert to_py(alice.docs[doc_id]) == {"n": 5}
    edit(alice.docs[doc_id], n=6)
    alice.sync(doc_id)
    assert to_py(bob2.docs[doc_id]) == {"n": 6}


def test_late_close_of_old_socket_does_not_drop_new_registration() -> None:
    """Closing the replaced connection leaves the new one registered."""
    world = make_world()
    bob = world.client("bob")
    bob2 = world.reconnect(bob)
    world.deliver(world.hub.close_connection(bob.conn))
    assert [p.peer_id for p in world.hub.peers()] == ["bob"]
    assert world.hub.connection_peer(bob2.conn) is not None


def test_second_join_on_same_socket_gets_fresh_peer() -> None:
    """A second `join` on one socket is answered with `peer` and the socket stays open."""
    world = make_world()
    bob = world.client("bob")
    bob.join()
    assert len(bob.of_type(Peer)) == 2 and not bob.closed


def test_reconnect_storm_leaves_one_registration() -> None:
    """Fifty reconnects with one peer id leave exactly one live registration."""
    world = make_world()
    bob = world.client("bob")
    for _ in range(50):
        bob = world.reconnect(bob)
    assert len(world.hub.peers()) == 1


# -- share policy ---------------------------------------------------------------


def test_request_policy_withholds_documents_until_asked() -> None:
    """Default policy: a new peer receives nothing but `peer` until it requests."""
    world = make_world()
    alice = world.client("alice")
    for i in range(5):
        create_doc(alice, i=i)
    bob = world.client("bob")
    assert [type(m) for m in bob.inbox] == [Peer]


def test_announce_policy_pushes_documents_on_join_and_creation() -> None:
    """announce: stored documents are synced after `peer`, new ones when created."""
    world = make_world(share="announce")
    alice = world.client("alice")
    first = create_doc(alice, i=1)
    bob = world.client("bob")
    assert first in bob.docs and to_py(bob.docs[first]) == {"i": 1}
    server_doc = generate_document_id()
    world.deliver(world.hub.add_document(server_doc, new_document({"s": 1})))
    assert to_py(bob.docs[server_doc]) == {"s": 1}
    assert to_py(alice.docs[server_doc]) == {"s": 1}


def test_announce_policy_loads_stored_documents_for_a_new_peer() -> None:
    """announce: documents only in storage are loaded and then pushed."""
    doc_id = generate_document_id()
    world = World(Hub(peer_id=PeerId("server"), storage_id="s", share="announce", stored={doc_id}))
    bob = world.client("bob")
    assert world.loads == [doc_id]
    world.deliver(stored_into(world.hub, doc_id, new_document({"d": 1}).save()))
    assert to_py(bob.docs[doc_id]) == {"d": 1}


def test_deny_policy_refuses_requests_and_uploads() -> None:
    """deny: requests and new documents both get `doc-unavailable`; nothing is stored."""
    world = make_world(share="deny")
    alice = world.client("alice")
    doc_id = create_doc(alice, x=1)
    assert [m.document_id for m in alice.of_type(DocUnavailable)] == [doc_id]
    assert not world.writes


def test_policy_callable_sees_identity_per_document() -> None:
    """A callable policy decides per peer and document and sees the peer's identity."""
    allowed = generate_document_id()
    seen: list[PeerInfo] = []

    def policy(peer: PeerInfo, doc_id: DocumentId) -> bool | None:
        seen.append(peer)
        return None if doc_id == allowed else False

    world = make_world(share=policy)
    alice = world.client("alice")
    alice.docs[allowed] = new_document({"ok": 1})
    alice.sync(allowed)
    denied = create_doc(alice, no=1)
    assert [m.document_id for m in alice.of_type(DocUnavailable)] == [denied]
    assert [w[0] for w in world.writes] == [allowed]
    assert seen[0].peer_id == "alice"


def test_failing_policy_denies() -> None:
    """A policy that raises is treated as deny (fail closed)."""

    def policy(peer: PeerInfo, doc_id: DocumentId) -> bool | None:
        raise RuntimeError("boom")

    world = make_world(share=policy)
    alice = world.client("alice")
    create_doc(alice, x=1)
    assert alice.of_type(DocUnavailable) and not world.writes


def test_policy_change_revokes_access() -> None:
    """After `policy_changed`, a peer that lost access gets `doc-unavailable` and no updates."""
    blocked: set[str] = set()

    def policy(peer: PeerInfo, doc_id: DocumentId) -> bool | None:
        return False if peer.peer_id in blocked else None

    world = make_world(share=policy)
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, v=1)
    bob.sync(doc_id, request=True)
    blocked.add("bob")
    world.deliver(world.hub.policy_changed())
    assert [m.document_id for m in bob.of_type(DocUnavailable)] == [doc_id]
    edit(alice.docs[doc_id], v=2)
    alice.sync(doc_id)
    assert to_py(bob.docs[doc_id]) == {"v": 1}


# -- ephemeral ------------------------------------------------------------------


def ephemeral(
    sender: str, doc_id: DocumentId, count: int, session: str = "s1", **extra: Any
) -> Ephemeral:
    return Ephemeral(
        PeerId(sender), PeerId("server"), doc_id, session, count, cbor2.dumps({"x": count}), extra
    )


def engaged_trio() -> tuple[World, DocumentId, Client, Client, Client]:
    world = make_world()
    a, b, c = world.client("a"), world.client("b"), world.client("c")
    doc_id = create_doc(a, e=1)
    b.sync(doc_id, request=True)
    c.sync(doc_id, request=True)
    return world, doc_id, a, b, c


def test_ephemeral_fans_out_exactly_once() -> None:
    """An ephemeral reaches each other engaged peer once, author fields intact, not the author."""
    _world, doc_id, a, b, c = engaged_trio()
    a.send(ephemeral("a", doc_id, 1, foo="bar"))
    for client in (b, c):
        got = client.of_type(Ephemeral)
        assert len(got) == 1
        assert (got[0].sender_id, got[0].session_id, got[0].count) == ("a", "s1", 1)
        assert got[0].target_id == client.peer_id
        assert cbor2.loads(got[0].data) == {"x": 1}
        assert got[0].extra == {"foo": "bar"}
    assert not a.of_type(Ephemeral)


def test_ephemeral_dedup_by_sender_and_session() -> None:
    """Same or lower count is dropped; higher count and a new session pass."""
    _world, doc_id, a, b, _c = engaged_trio()
    a.send(ephemeral("a", doc_id, 5))
    a.send(ephemeral("a", doc_id, 5))
    a.send(ephemeral("a", doc_id, 3))
    a.send(ephemeral("a", doc_id, 6))
    a.send(ephemeral("a", doc_id, 1, session="s2"))
    assert [(m.session_id, m.count) for m in b.of_type(Ephemeral)] == [
        ("s1", 5),
        ("s1", 6),
        ("s2", 1),
    ]


def test_ephemeral_not_relayed_to_unengaged_peer_until_it_engages() -> None:
    """A peer that never touched the document gets none of its ephemerals until it requests it."""
    world, doc_id, a, _b, _c = engaged_trio()
    e = world.client("e")
    a.send(ephemeral("a", doc_id, 1))
    assert not e.of_type(Ephemeral)
    e.sync(doc_id, request=True)
    a.send(ephemeral("a", doc_id, 2))
    assert [m.count for m in e.of_type(Ephemeral)] == [2]


def test_ephemeral_for_unknown_document_is_dropped() -> None:
    """An ephemeral for an unknown document is not relayed and creates nothing."""
    world, _doc_id, a, b, _c = engaged_trio()
    a.send(ephemeral("a", generate_document_id(), 1))
    assert not b.of_type(Ephemeral) and not a.closed
    assert len(world.writes) == 1


def test_presence_only_peer_receives_relays() -> None:
    """A peer whose only traffic for a document is ephemeral still receives others' ephemerals."""
    world, doc_id, a, _b, _c = engaged_trio()
    p = world.client("p")
    p.send(ephemeral("p", doc_id, 1))
    a.send(ephemeral("a", doc_id, 9))
    assert [m.count for m in p.of_type(Ephemeral)] == [9]


def test_disconnect_removes_peer_everywhere() -> None:
    """After a peer disconnects, later changes and ephemerals send it nothing."""
    world, doc_id, a, b, _c = engaged_trio()
    world.deliver(world.hub.close_connection(b.conn))
    n = len(b.inbox)
    edit(a.docs[doc_id], e=2)
    a.sync(doc_id)
    a.send(ephemeral("a", doc_id, 1))
    assert len(b.inbox) == n


def test_server_side_change_reaches_peers() -> None:
    """`change_document` syncs the edit to every engaged peer and is written."""
    world, doc_id, a, b, _c = engaged_trio()

    def put(core: am.Document) -> None:
        with core.transaction() as tx:
            tx.put(am.ROOT, "server", am.ScalarType.Int, 42)

    world.deliver(world.hub.change_document(doc_id, put))
    assert to_py(a.docs[doc_id])["server"] == 42 and to_py(b.docs[doc_id])["server"] == 42
    assert world.writes[-1][0] == doc_id


def test_invalid_sync_data_closes_connection() -> None:
    """Garbage inside `data` gets an error and a close, and does not damage the document."""
    world, doc_id, a, b, _c = engaged_trio()
    b.send(Sync(PeerId("b"), PeerId("server"), doc_id, b"\x42\x05garbage"))
    assert b.closed
    edit(a.docs[doc_id], e=3)
    a.sync(doc_id)
    assert to_py(world.hub.document(doc_id)) == {"e": 3}


def run_sync_count(world: World) -> int:
    return sum(len(c.of_type(Sync)) for c in world.clients.values())


def test_sync_conversation_terminates() -> None:
    """Two peers editing concurrently exchange a bounded number of messages."""
    world = make_world()
    a, b = world.client("a"), world.client("b")
    doc_id = create_doc(a, n=0)
    b.sync(doc_id, request=True)
    for i in range(100):
        edit(a.docs[doc_id], a=i)
        edit(b.docs[doc_id], b=i)
        a.sync(doc_id)
        b.sync(doc_id)
    assert run_sync_count(world) < 100 * 2 * 4
    assert sorted(a.docs[doc_id].get_heads()) == sorted(b.docs[doc_id].get_heads())


def test_document_missing_a_middle_change_is_salvaged() -> None:
    """Stored history with a lost change loads without it and what depends on it."""
    doc = new_document({"a": 0})
    edit(doc, b=1)
    edit(doc, c=1)
    first, _lost, last = (change.bytes for change in doc.get_changes([]))
    doc_id = generate_document_id()
    world = World(Hub(peer_id=PeerId("server"), storage_id="s", stored={doc_id}))
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    world.deliver(stored_into(world.hub, doc_id, first + last))  # "c" needs the lost "b"
    assert to_py(bob.docs[doc_id]) == {"a": 0}
    assert not bob.of_type(DocUnavailable)


def test_batched_replies_still_acknowledge_a_change() -> None:
    """A change followed, before any reply, by a heads-only message still gets an answer
    advertising the new heads (else the core thinks the peer knows them and it waits forever)."""
    hub = Hub(peer_id=PeerId("server"), storage_id="s")
    conn = hub.open_connection()
    hub.receive(conn, encode(Join(PeerId("p"))))
    doc_id = generate_document_id()
    mine, state = new_document({"n": 0}), am.SyncState()

    def exchange() -> list[Sync]:
        """Send our next message; answer the hub's replies until it is quiet."""
        msg = mine.generate_sync_message(state)
        sent = (
            []
            if msg is None
            else hub.receive(conn, encode(Sync("p", "server", doc_id, msg.encode()))).send
        )
        out = [m for _, m in hub.propagate().send + sent if isinstance(m, Sync)]
        for m in out:
            mine.receive_sync_message(state, am.Message.decode(m.data))
        return out

    for _ in range(4):
        exchange()
    edit(mine, n=1)
    first = mine.generate_sync_message(state)  # carries the change
    hub.receive(conn, encode(Sync("p", "server", doc_id, first.encode())))
    heads_only = mine.generate_sync_message(state)
    if heads_only is None:  # the core waits for our answer: force the second message
        heads_only = mine.generate_sync_message(am.SyncState())
    early = hub.receive(conn, encode(Sync("p", "server", doc_id, heads_only.encode()))).send
    replies = [m for _, m in early + hub.propagate().send if isinstance(m, Sync)]
    advertised = [sorted(decode_heads_of(m.data)) for m in replies]
    assert sorted(mine.get_heads()) in advertised


def decode_heads_of(data: bytes) -> list[bytes]:
    return list(read_sync_message(data).heads)


def test_announce_policy_pushes_a_peer_created_document_to_connected_peers() -> None:
    """announce: a document a peer uploads reaches the other connected peers unasked."""
    world = make_world(share="announce")
    alice, bob = world.client("alice"), world.client("bob")
    doc_id = create_doc(alice, fresh=1)
    assert to_py(bob.docs[doc_id]) == {"fresh": 1}


def test_garbage_first_sync_creates_nothing() -> None:
    """A first `sync` for an unknown id whose data is garbage leaves no document behind."""
    world = make_world()
    eve, bob = world.client("eve"), world.client("bob")
    doc_id = generate_document_id()
    eve.send(Sync(PeerId("eve"), PeerId("server"), doc_id, b"\x42\x05garbage"))
    assert eve.closed
    bob.sync(doc_id, request=True)
    assert [m.document_id for m in bob.of_type(DocUnavailable)] == [doc_id]
    assert not world.writes


# -- idle documents leave memory ----------------------------------------------------


def world_with_store() -> tuple[World, set[DocumentId]]:
    """A hub whose store holds what ``stored_bytes`` gives: every write, once delivered."""
    stored: set[DocumentId] = set()
    return World(Hub(peer_id=PeerId("server"), storage_id="s", stored=stored)), stored


def stored_bytes(world: World, doc_id: DocumentId) -> bytes:
    return b"".join(data for written, data in world.writes if written == doc_id)


def test_an_idle_document_unloads_and_a_returning_peer_gets_the_same_answers() -> None:
    world, stored = world_with_store()
    alice = world.client("alice")
    doc_id = create_doc(alice, n=1)
    stored.add(doc_id)  # the runtime's flush made the writes durable
    heads = world.hub.document(doc_id).get_heads()
    world.deliver(world.hub.close_connection(alice.conn))
    assert world.hub.idle_documents() == [doc_id]
    world.deliver(world.hub.unload(doc_id))
    assert not world.hub.is_loaded(doc_id)
    assert world.hub.resident_count() == 0
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    assert world.loads == [doc_id]  # loaded again, not "unavailable"
    assert not bob.of_type(DocUnavailable)
    world.deliver(stored_into(world.hub, doc_id, stored_bytes(world, doc_id)))
    assert to_py(bob.docs[doc_id]) == {"n": 1}
    assert bob.docs[doc_id].get_heads() == heads
    assert world.hub.document(doc_id).get_heads() == heads


def test_a_document_a_peer_syncs_is_never_idle() -> None:
    world, stored = world_with_store()
    alice = world.client("alice")
    doc_id = create_doc(alice, n=1)
    stored.add(doc_id)
    assert world.hub.idle_documents() == []
    world.deliver(world.hub.unload(doc_id))
    assert world.hub.is_loaded(doc_id)
    alice.docs[doc_id] = world.hub.document(doc_id)
    edit(alice.docs[doc_id], n=2)
    alice.sync(doc_id)
    assert to_py(world.hub.document(doc_id)) == {"n": 2}


def test_idle_documents_come_least_recently_used_first() -> None:
    world, stored = world_with_store()
    alice = world.client("alice")
    first, second = create_doc(alice, n=1), create_doc(alice, n=2)
    stored.update((first, second))
    world.deliver(world.hub.close_connection(alice.conn))
    mark = world.hub.uses + 1  # everything used so far
    world.hub.document(first)  # used again: now the more recent
    assert world.hub.idle_documents() == [second, first]
    assert world.hub.idle_documents(limit=1) == [second]
    assert world.hub.idle_documents(used_before=mark) == [second]
    assert world.hub.idle_documents(busy={second}) == [first]


def test_a_document_whose_changes_the_hub_never_handed_to_storage_stays() -> None:
    """Changed through the API after the last write: unloadable only once recorded."""
    world, stored = world_with_store()
    alice = world.client("alice")
    doc_id = create_doc(alice, n=1)
    stored.add(doc_id)
    world.deliver(world.hub.close_connection(alice.conn))
    world.deliver(world.hub.change_document(doc_id, lambda core: edit(core, n=3)))
    assert world.writes[-1][0] == doc_id  # recorded: in the store once flushed
    world.deliver(world.hub.unload(doc_id))
    bob = world.client("bob")
    bob.sync(doc_id, request=True)
    world.deliver(stored_into(world.hub, doc_id, stored_bytes(world, doc_id)))
    assert to_py(bob.docs[doc_id]) == {"n": 3}


def test_ids_asked_for_and_forgotten_leave_no_trace() -> None:
    """A peer asking for many unknown ids costs nothing once it leaves."""
    world, _stored = world_with_store()
    mallory = world.client("mallory")
    for _ in range(20):
        mallory.sync(generate_document_id(), request=True)
    assert world.hub.resident_count() == 20
    world.deliver(world.hub.close_connection(mallory.conn))
    assert world.hub.resident_count() == 0


# -- changes another server stored (a shared store) ------------------------------


def test_stored_changes_arrived_reach_peers_and_are_not_written_again() -> None:
    """Changes another server stored are applied, synced to this hub's peers, never rewritten."""
    world = make_world()
    alice = world.client("alice")
    doc_id = create_doc(alice, x=1)
    elsewhere = world.hub.document(doc_id)  # the other server's copy
    heads = elsewhere.get_heads()
    edit(elsewhere, y=2)
    edit(elsewhere, z=3)
    stored = b"".join(c.bytes for c in elsewhere.get_changes(heads))
    written = len(world.writes)
    world.deliver(world.hub.stored_changes_arrived(doc_id, stored))
    assert len(world.writes) == written
    assert to_py(alice.docs[doc_id]) == {"x": 1, "y": 2, "z": 3}
    # Again (a notification seen twice, rows read again): nothing changes.
    assert not world.hub.stored_changes_arrived(doc_id, stored)


def test_stored_snapshot_arrived_brings_only_what_is_missing() -> None:
    """A compaction elsewhere (a saved document) gives the changes this hub lacks."""
    world = make_world()
    alice = world.client("alice")
    doc_id = create_doc(alice, x=1)
    elsewhere = world.hub.document(doc_id)
    edit(elsewhere, y=2)
    world.deliver(world.hub.stored_changes_arrived(doc_id, elsewhere.save()))
    assert to_py(alice.docs[doc_id]) == {"x": 1, "y": 2}
    assert to_py(world.hub.document(doc_id)) == {"x": 1, "y": 2}


def test_stored_changes_without_their_dependencies_wait() -> None:
    """A change whose dependency has not arrived waits; it applies when that does."""
    world = make_world()
    alice = world.client("alice")
    doc_id = create_doc(alice, x=1)
    elsewhere = world.hub.document(doc_id)
    start = elsewhere.get_heads()
    edit(elsewhere, y=2)
    middle = elsewhere.get_heads()
    edit(elsewhere, z=3)
    first = b"".join(c.bytes for c in elsewhere.get_changes(start) if c.hash in middle)
    second = b"".join(c.bytes for c in elsewhere.get_changes(middle))
    world.deliver(world.hub.stored_changes_arrived(doc_id, second))
    assert world.hub.waiting_changes(doc_id) == 1
    world.deliver(world.hub.stored_changes_arrived(doc_id, first))
    assert world.hub.waiting_changes(doc_id) == 0
    assert to_py(alice.docs[doc_id]) == {"x": 1, "y": 2, "z": 3}


def test_stored_changes_bring_a_missing_document_to_its_requester() -> None:
    """A document asked for before another server created it is sent once it is stored there."""
    world = make_world()
    bob = world.client("bob")
    doc_id = generate_document_id()
    bob.sync(doc_id, request=True)
    assert bob.of_type(DocUnavailable) and world.hub.is_missing(doc_id)
    made = new_document({"made": "elsewhere"})
    world.deliver(world.hub.stored_changes_arrived(doc_id, made.save()))
    assert to_py(bob.docs[doc_id]) == {"made": "elsewhere"}
    assert world.hub.is_loaded(doc_id) and not world.writes


def test_stored_changes_for_a_document_not_in_memory_are_ignored() -> None:
    world = make_world()
    assert not world.hub.stored_changes_arrived(generate_document_id(), new_document({}).save())
