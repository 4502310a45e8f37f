"""The sans-I/O client peer, driven message by message (protocol.md §3, §4.2, §7).

The server is our sans-I/O :class:`Hub`, or hand-made messages where a server
must misbehave; nothing here opens a socket or waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import automerge.core as am
import pytest
from hostile import body, chunk, deflate_bomb, op_columns, sync_message

from autosync_jupyter.core.hub import Effects, Hub
from autosync_jupyter.core.peer import ClientPeer, PeerEffects
from autosync_jupyter.core.protocol import (
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    Message,
    PeerMetadata,
    Request,
    Sync,
    decode,
    encode,
)
from autosync_jupyter.crdt.sync_message import read_sync_message
from autosync_jupyter.crdt.values import new_document, to_py
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id

SERVER = PeerId("server")


@dataclass
class Client:
    """A ClientPeer on one hub connection, as a driver would run it (minus sockets)."""

    world: World
    peer: ClientPeer
    conn: int = 0
    log: list[PeerEffects] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)

    def connect(self) -> None:
        self.conn = self.world.hub.open_connection()
        self.world.clients[self.conn] = self
        meta = PeerMetadata(is_ephemeral=True)
        fx = self.world.hub.receive(self.conn, encode(Join(self.peer.peer_id, peer_metadata=meta)))
        assert fx.send and fx.send[0][1].type == "peer"
        self.carry_out(self.peer.connected(self.world.hub.peer_id))

    def drop(self) -> None:
        self.world.clients.pop(self.conn, None)
        self.world.deliver(self.world.hub.close_connection(self.conn))
        self.carry_out(self.peer.disconnected())

    def carry_out(self, fx: PeerEffects) -> PeerEffects:
        self.log.append(fx)
        for msg in fx.send:
            self.sent.append(msg)
            if self.conn in self.world.clients:
                self.world.deliver(self.world.hub.receive(self.conn, encode(msg)))
        return fx

    def hear(self, msg: Message) -> PeerEffects:
        return self.carry_out(self.peer.receive(decode(encode(msg))))

    def effects(self) -> PeerEffects:
        """Everything the peer asked for so far, merged."""
        out = PeerEffects()
        for fx in self.log:
            out.send += fx.send
            out.states += fx.states
            out.applied += fx.applied
            out.changed += fx.changed
            out.ephemeral += fx.ephemeral
            out.offered += fx.offered
            out.rejected += fx.rejected
            out.server_errors += fx.server_errors
            out.retry = out.retry or fx.retry
        return out


class World:
    def __init__(self) -> None:
        self.hub = Hub(peer_id=SERVER, storage_id="server-storage")
        self.clients: dict[int, Client] = {}

    def client(self, name: str, *, connect: bool = True) -> Client:
        client = Client(self, ClientPeer(PeerId(name)))
        if connect:
            client.connect()
        return client

    def deliver(self, fx: Effects) -> None:
        for conn, msg in fx.send:
            client = self.clients.get(conn)
            if client is not None:
                client.hear(msg)
        if self.hub.pending_propagation():
            self.deliver(self.hub.propagate())

    def seed(self, **values: object) -> tuple[DocumentId, am.Document]:
        doc_id = generate_document_id()
        document = new_document(values)
        self.deliver(self.hub.add_document(doc_id, document.fork()))
        return doc_id, document


def edit(core: am.Document, **values: int) -> None:
    with core.transaction() as tx:
        for key, value in values.items():
            tx.put(am.ROOT, key, am.ScalarType.Int, value)


def sync_from(doc: am.Document, doc_id: DocumentId) -> Sync:
    """The first sync message a server holding ``doc`` would send."""
    message = doc.generate_sync_message(am.SyncState())
    assert message is not None
    return Sync(SERVER, PeerId("c"), doc_id, message.encode())


class OneDocServer:
    """A server holding one document, talking to one peer by hand (no hub)."""

    def __init__(self, peer: ClientPeer, doc_id: DocumentId, doc: am.Document) -> None:
        self.peer, self.doc_id, self.doc = peer, doc_id, doc
        self.state = am.SyncState()

    def hear(self, fx: PeerEffects) -> None:
        for msg in fx.send:
            if isinstance(msg, (Sync, Request)) and msg.document_id == self.doc_id:
                self.doc.receive_sync_message(self.state, am.Message.decode(msg.data))

    def say(self) -> PeerEffects | None:
        """The server's next sync message, handed to the peer (None: nothing to say)."""
        message = self.doc.generate_sync_message(self.state)
        if message is None:
            return None
        return self.peer.receive(Sync(SERVER, self.peer.peer_id, self.doc_id, message.encode()))

    def talk(self) -> list[PeerEffects]:
        """Exchange messages until neither side has anything to say."""
        heard: list[PeerEffects] = []
        for _ in range(20):
            fx = self.say()
            if fx is None:
                return heard
            heard.append(fx)
            self.hear(fx)
        raise AssertionError("the conversation does not end")


# -- opening -------------------------------------------------------------------------


def test_a_document_we_lack_is_requested() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    fx = peer.open(doc_id, am.Document())
    (msg,) = fx.send
    assert isinstance(msg, Request) and msg.document_id == doc_id and msg.target_id == SERVER
    assert list(read_sync_message(msg.data).heads) == []
    assert peer.state(doc_id) == "requesting" and fx.states == []


def test_a_document_we_have_is_announced_with_sync() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    fx = peer.open(doc_id, core)
    (msg,) = fx.send
    assert type(msg) is Sync and msg.document_id == doc_id
    assert list(read_sync_message(msg.data).heads) == core.get_heads()
    assert peer.state(doc_id) == "ready"


def test_nothing_is_sent_before_the_connection_and_everything_once_it_is_up() -> None:
    peer = ClientPeer(PeerId("c"))
    lacking, having = generate_document_id(), generate_document_id()
    assert not peer.open(lacking, am.Document())
    assert not peer.open(having, new_document({"x": 1}))
    fx = peer.connected(SERVER)
    sent = {(type(m), m.document_id) for m in fx.send if isinstance(m, (Request, Sync))}
    assert len(fx.send) == 2 and sent == {(Request, lacking), (Sync, having)}


def test_opening_an_open_document_twice_is_refused() -> None:
    peer = ClientPeer(PeerId("c"))
    doc_id = generate_document_id()
    peer.open(doc_id, am.Document())
    with pytest.raises(ValueError, match="open already"):
        peer.open(doc_id, am.Document())


# -- answers -------------------------------------------------------------------------


def test_the_server_answer_makes_a_requested_document_ready() -> None:
    world = World()
    doc_id, original = world.seed(title="hello")
    bob = world.client("bob")
    core = am.Document()
    bob.carry_out(bob.peer.open(doc_id, core))
    fx = bob.effects()
    assert to_py(core) == {"title": "hello"}
    assert bob.peer.state(doc_id) == "ready"
    assert (doc_id, "ready") in fx.states
    assert fx.changed == [(doc_id, [])]  # listeners hear of it, from empty heads
    assert doc_id in fx.applied
    assert bob.peer.in_sync(doc_id)
    assert bob.peer.server_heads(doc_id) == original.get_heads()


def test_an_answer_is_answered_until_both_sides_are_in_sync() -> None:
    world = World()
    doc_id, _ = world.seed(n=1)
    alice, bob = world.client("alice"), world.client("bob")
    a, b = am.Document(), am.Document()
    alice.carry_out(alice.peer.open(doc_id, a))
    bob.carry_out(bob.peer.open(doc_id, b))
    edit(a, n=2)
    alice.carry_out(alice.peer.local_change(doc_id))
    assert alice.peer.pending_push()
    alice.carry_out(alice.peer.push())
    assert not alice.peer.pending_push()
    assert to_py(b) == {"n": 2}
    assert to_py(world.hub.document(doc_id)) == {"n": 2}
    # Nothing more to say: a second push sends nothing.
    assert alice.peer.push().send == []


def test_a_message_for_a_document_not_open_here_is_an_offer() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    fx = peer.receive(sync_from(new_document({"x": 1}), doc_id))
    assert fx.offered == [doc_id] and fx.send == [] and not peer.is_open(doc_id)


# -- acknowledgement -----------------------------------------------------------------


def test_a_change_is_acknowledged_once_the_server_advertises_its_heads() -> None:
    world = World()
    alice = world.client("alice")
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    heads = core.get_heads()
    fx = alice.peer.open(doc_id, core)
    assert not alice.peer.acknowledged(doc_id, heads)  # sent, not answered yet
    alice.carry_out(fx)
    assert alice.peer.acknowledged(doc_id, heads)
    assert alice.peer.acknowledged(doc_id, [])  # nothing to acknowledge

    edit(core, x=2)
    newer = core.get_heads()
    alice.carry_out(alice.peer.local_change(doc_id))
    assert not alice.peer.acknowledged(doc_id, newer)  # waiting to be pushed
    alice.carry_out(alice.peer.push())
    assert alice.peer.acknowledged(doc_id, newer)
    assert alice.peer.acknowledged(doc_id, heads)  # older heads: in the server's history


def test_heads_the_server_never_saw_are_not_acknowledged() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    server = OneDocServer(peer, doc_id, am.Document())
    server.hear(peer.open(doc_id, core))
    server.talk()
    assert peer.acknowledged(doc_id, core.get_heads())
    edit(core, x=2)  # never pushed, never seen
    assert not peer.acknowledged(doc_id, core.get_heads())


def test_nothing_is_acknowledged_while_disconnected() -> None:
    world = World()
    alice = world.client("alice")
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    alice.carry_out(alice.peer.open(doc_id, core))
    assert alice.peer.acknowledged(doc_id, core.get_heads())
    alice.drop()
    assert not alice.peer.acknowledged(doc_id, core.get_heads())


# -- unavailable ---------------------------------------------------------------------


def test_doc_unavailable_makes_a_requested_document_unavailable_until_it_arrives() -> None:
    world = World()
    bob = world.client("bob")
    doc_id = generate_document_id()
    core = am.Document()
    bob.carry_out(bob.peer.open(doc_id, core))
    assert bob.peer.state(doc_id) == "unavailable"  # our hub said doc-unavailable
    assert (doc_id, "unavailable") in bob.effects().states
    # Someone uploads it later: the hub sends it to the waiting requester.
    alice = world.client("alice")
    alice.carry_out(alice.peer.open(doc_id, new_document({"late": True})))
    assert bob.peer.state(doc_id) == "ready" and to_py(core) == {"late": True}


def test_doc_unavailable_after_data_changes_nothing() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    peer.open(doc_id, new_document({"x": 1}))
    fx = peer.receive(DocUnavailable(SERVER, PeerId("c"), doc_id))
    assert fx.states == [] and peer.state(doc_id) == "ready"


def test_unavailable_documents_are_asked_for_again_after_a_reconnect() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    peer.open(doc_id, am.Document())
    peer.receive(DocUnavailable(SERVER, PeerId("c"), doc_id))
    assert peer.state(doc_id) == "unavailable"
    fx = peer.disconnected()
    assert fx.states == [(doc_id, "requesting")] and fx.send == []
    (msg,) = peer.connected(SERVER).send
    assert isinstance(msg, Request) and msg.document_id == doc_id


# -- an empty answer -----------------------------------------------------------------


def test_an_empty_answer_is_reported_and_left_to_the_driver() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    peer.open(doc_id, am.Document())
    assert not peer.answered_empty(doc_id)  # nothing said yet
    fx = peer.receive(Sync(SERVER, PeerId("c"), doc_id, sync_message()))
    assert fx.applied == [doc_id] and fx.states == []
    assert peer.answered_empty(doc_id) and not peer.in_sync(doc_id)
    assert peer.state(doc_id) == "requesting"  # the grace period is the driver's


def test_a_concluded_empty_answer_is_remembered_for_the_connection() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    peer.open(doc_id, am.Document())
    peer.receive(Sync(SERVER, PeerId("c"), doc_id, sync_message()))
    assert peer.conclude_empty(doc_id, accept=False).states == []
    peer.close(doc_id)
    # The server would not answer a new request: the empty answer stands.
    peer.open(doc_id, am.Document())
    assert peer.answered_empty(doc_id)
    # A new connection forgets it.
    peer.close(doc_id)
    peer.disconnected()
    peer.connected(SERVER)
    peer.open(doc_id, am.Document())
    assert not peer.answered_empty(doc_id)


def test_an_accepted_empty_answer_makes_the_document_ready() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    peer.open(doc_id, am.Document())
    peer.receive(Sync(SERVER, PeerId("c"), doc_id, sync_message()))
    fx = peer.conclude_empty(doc_id, accept=True)
    assert fx.states == [(doc_id, "ready")] and peer.state(doc_id) == "ready"


def test_data_after_an_empty_answer_ends_it() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    core = am.Document()
    server = OneDocServer(peer, doc_id, new_document({"x": 1}))
    server.hear(peer.open(doc_id, core))
    peer.receive(Sync(SERVER, PeerId("c"), doc_id, sync_message()))
    assert peer.answered_empty(doc_id)
    states = [state for fx in server.talk() for state in fx.states]
    assert states == [(doc_id, "ready")] and to_py(core) == {"x": 1}
    assert not peer.answered_empty(doc_id) and peer.in_sync(doc_id)


# -- reconnect -----------------------------------------------------------------------


def test_a_reconnect_resends_every_document_from_fresh_sync_states() -> None:
    world = World()
    alice = world.client("alice")
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    alice.carry_out(alice.peer.open(doc_id, core))
    assert alice.peer.push().send == []  # in sync: nothing to say
    alice.drop()
    edit(core, x=2)  # made offline
    alice.carry_out(alice.peer.local_change(doc_id))
    assert alice.peer.push().send == []  # dropped while disconnected...
    assert not alice.peer.pending_push()
    before = len(alice.sent)
    alice.connect()  # ...and sent anew on the next connection
    opening = alice.sent[before]
    assert type(opening) is Sync and opening.document_id == doc_id
    assert list(read_sync_message(opening.data).heads) == core.get_heads()
    assert to_py(world.hub.document(doc_id)) == {"x": 2}
    assert alice.peer.acknowledged(doc_id, core.get_heads())


def test_server_heads_are_forgotten_on_a_new_connection() -> None:
    world = World()
    doc_id, _ = world.seed(x=1)
    bob = world.client("bob")
    bob.carry_out(bob.peer.open(doc_id, am.Document()))
    assert bob.peer.server_heads(doc_id)
    bob.drop()
    bob.peer.connected(SERVER)  # not delivered: the server has said nothing yet
    assert bob.peer.server_heads(doc_id) is None
    assert not bob.peer.acknowledged(doc_id, [b"\1" * 32])


# -- ephemeral -----------------------------------------------------------------------


def test_ephemeral_messages_reach_open_documents_only() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id, other = generate_document_id(), generate_document_id()
    peer.open(doc_id, new_document({"x": 1}))
    fx = peer.receive(Ephemeral(PeerId("bob"), PeerId("c"), doc_id, "s", 1, b"\x01"))
    assert fx.ephemeral == [(doc_id, PeerId("bob"), b"\x01")]
    stray = Ephemeral(PeerId("bob"), PeerId("c"), other, "s", 2, b"\x01")
    assert peer.receive(stray).ephemeral == []


def test_broadcast_counts_its_messages_and_sends_nothing_while_disconnected() -> None:
    peer = ClientPeer(PeerId("c"), session_id="sess")
    doc_id = generate_document_id()
    peer.open(doc_id, new_document({"x": 1}))
    assert peer.broadcast(doc_id, b"\x01").send == []
    peer.connected(SERVER)
    sent = peer.broadcast(doc_id, b"\x01").send + peer.broadcast(doc_id, b"\x02").send
    assert all(isinstance(m, Ephemeral) for m in sent)
    assert [(m.count, m.session_id, m.data) for m in sent if isinstance(m, Ephemeral)] == [
        (1, "sess", b"\x01"),
        (2, "sess", b"\x02"),
    ]


def test_ephemeral_messages_relay_between_two_peers_through_the_hub() -> None:
    world = World()
    doc_id, _ = world.seed(x=1)
    alice, bob = world.client("alice"), world.client("bob")
    alice.carry_out(alice.peer.open(doc_id, am.Document()))
    bob.carry_out(bob.peer.open(doc_id, am.Document()))
    alice.carry_out(alice.peer.broadcast(doc_id, b"\xa0"))
    assert bob.effects().ephemeral == [(doc_id, PeerId("alice"), b"\xa0")]


# -- a change open on the document ---------------------------------------------------


def test_work_waits_while_a_change_is_open_then_goes_on_in_order() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    core = new_document({"mine": 1})
    server = OneDocServer(peer, doc_id, new_document({"theirs": 2}))
    server.hear(peer.open(doc_id, core))
    mine = core.get_heads()
    tx = core.transaction()
    tx.__enter__()
    try:
        message = server.doc.generate_sync_message(server.state)
        assert message is not None
        data = message.encode()
        first = peer.receive(Sync(SERVER, peer.peer_id, doc_id, data))
        second = peer.receive(Sync(SERVER, peer.peer_id, doc_id, data))  # a resend
        assert first.retry and first.applied == [] and first.send == []
        assert second.applied == [] and second.send == []  # in order, behind the first
        assert peer.retry().retry  # still open: still waiting
        assert not peer.local_change(doc_id).send
        assert peer.push().retry and peer.pending_push()
    finally:
        tx.__exit__(None, None, None)
    fx = peer.retry()
    assert fx.applied == [doc_id, doc_id] and not fx.retry  # both, in order
    assert not peer.pending_push()
    server.hear(fx)
    rest = server.talk()
    # Listeners hear of the remote change once, from our own heads.
    assert [before for f in [fx, *rest] for _, before in f.changed] == [mine]
    assert to_py(core) == {"mine": 1, "theirs": 2} == to_py(server.doc)


# -- a hostile or broken server ------------------------------------------------------


def panicking_change(doc: am.Document) -> bytes:
    """A change whose predecessor names actor index 104: the core would panic."""
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


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x42\xff\xff", "invalid sync message"),
        (sync_message([deflate_bomb(8 << 20)], heads=[b"\1" * 32]), "invalid sync message"),
        ("panic", "names an actor the change lacks"),
    ],
    ids=["not-a-sync-message", "deflate-bomb", "panicking-change"],
)
def test_a_refused_sync_message_changes_nothing_and_sync_goes_on(
    data: bytes | str, reason: str
) -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    core = new_document({"x": 1})
    other = new_document({"y": 2})
    server = OneDocServer(peer, doc_id, other)
    server.hear(peer.open(doc_id, core))
    heads = core.get_heads()
    if data == "panic":
        data = sync_message([panicking_change(core)], heads=[b"\2" * 32])
    assert isinstance(data, bytes)
    fx = peer.receive(Sync(SERVER, PeerId("c"), doc_id, data))
    assert len(fx.rejected) == 1 and reason in fx.rejected[0]
    assert fx.send == [] and fx.changed == [] and fx.applied == []
    assert core.get_heads() == heads and peer.server_heads(doc_id) is None
    # The document is intact, and good messages still apply.
    heard = server.talk()
    assert [text for fx in heard for text in fx.rejected] == []
    assert to_py(core) == {"x": 1, "y": 2} == to_py(other)


def test_an_error_from_the_server_is_reported() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    fx = peer.receive(Error(SERVER, "go away"))
    assert fx.server_errors == ["go away"] and fx.send == []


def test_doc_unavailable_and_ephemeral_for_unknown_documents_are_ignored() -> None:
    peer = ClientPeer(PeerId("c"))
    peer.connected(SERVER)
    doc_id = generate_document_id()
    assert not peer.receive(DocUnavailable(SERVER, PeerId("c"), doc_id))
    assert not peer.receive(Ephemeral(SERVER, PeerId("c"), doc_id, "s", 1, b""))
    assert peer.state(doc_id) is None
