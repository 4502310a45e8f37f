"""Upstream servers in the sans-I/O hub: the hub as a client of another server.

Two hubs wired back to back, as the runtime wires them over a socket: the
``local`` hub opened a connection to the ``central`` one
(:meth:`Hub.open_upstream`), and clients of each are the minimal clients of
test_hub.
"""

from __future__ import annotations

from collections.abc import Callable

import automerge.core as am
import pytest
from test_hub import Client, World, create_doc, edit, stored_into
from websockets.frames import CloseCode

from autosync_jupyter.core.hub import Effects, Hub
from autosync_jupyter.core.protocol import (
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    Peer,
    Request,
    Sync,
    encode,
)
from autosync_jupyter.crdt.values import new_document, to_py
from autosync_jupyter.ids import DocumentId, PeerId, generate_document_id

CENTRAL = "ws://central.example"


class Linked(World):
    """A world whose hub may also talk to another hub over some connections."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.routes: dict[int, Callable[[bytes], None]] = {}
        self.asked: list[DocumentId] = []
        self.link_closes: list[tuple[int, int, str]] = []

    def deliver(self, fx: Effects) -> None:
        self.asked.extend(fx.asked)
        routed = [(conn, msg) for conn, msg in fx.send if conn in self.routes]
        fx.send = [(conn, msg) for conn, msg in fx.send if conn not in self.routes]
        self.link_closes.extend(c for c in fx.close if c[0] in self.routes)
        super().deliver(fx)
        for conn, msg in routed:
            self.routes[conn](encode(msg))


def hubs(**local_options: object) -> tuple[Linked, Linked]:
    local = Linked(Hub(peer_id=PeerId("local"), storage_id="local-storage", **local_options))  # type: ignore[arg-type]
    central = Linked(Hub(peer_id=PeerId("central"), storage_id="central-storage"))
    return local, central


def link(local: Linked, central: Linked) -> tuple[int, int]:
    """Connect ``local`` to ``central`` as its upstream; return both connection ids."""
    c_conn = central.hub.open_connection(remote_address="local")
    l_conn, fx = local.hub.open_upstream(CENTRAL)
    local.routes[l_conn] = lambda data: central.deliver(central.hub.receive(c_conn, data))
    central.routes[c_conn] = lambda data: local.deliver(local.hub.receive(l_conn, data))
    local.deliver(fx)
    return l_conn, c_conn


def mute_upstream(local: Linked) -> int:
    """An upstream that answered the join and then says nothing, ever."""
    l_conn, fx = local.hub.open_upstream("ws://mute")
    local.routes[l_conn] = lambda data: None
    local.deliver(fx)
    local.deliver(local.hub.receive(l_conn, encode(Peer(PeerId("mute"), local.hub.peer_id))))
    return l_conn


def asked_of_a_mute_upstream() -> tuple[Linked, int, Client, DocumentId]:
    """A client of ``local`` asks for an id nobody has; the one upstream never answers."""
    local, _ = hubs()
    l_conn = mute_upstream(local)
    reader = local.client("reader")
    doc_id = generate_document_id()
    reader.sync(doc_id, request=True)
    return local, l_conn, reader, doc_id


def test_the_hub_joins_its_upstream_with_its_storage_id() -> None:
    local, _ = hubs()
    l_conn, fx = local.hub.open_upstream(CENTRAL)
    ((conn, join),) = fx.send
    assert conn == l_conn and isinstance(join, Join)
    assert join.sender_id == "local" and join.peer_metadata is not None
    assert join.peer_metadata.storage_id == "local-storage"
    assert join.peer_metadata.is_ephemeral is False
    assert not local.hub.upstream_joined(CENTRAL)
    local2, central2 = hubs()
    link(local2, central2)
    assert local2.hub.upstream_joined(CENTRAL)
    (seen,) = central2.hub.peers()
    assert seen.peer_id == "local" and seen.storage_id == "local-storage"
    (up,) = local2.hub.peers()
    assert up.peer_id == "central" and up.upstream


def test_an_upstream_that_does_not_answer_with_peer_is_dropped() -> None:
    local, _ = hubs()
    l_conn, fx = local.hub.open_upstream(CENTRAL)
    fx = local.hub.receive(
        l_conn, encode(Sync(PeerId("x"), PeerId("local"), generate_document_id(), b""))
    )
    assert [c for c, _, _ in fx.close] == [l_conn]
    assert not local.hub.upstream_joined(CENTRAL)


def test_an_upstream_refusing_us_closes_quietly() -> None:
    local, _ = hubs()
    l_conn, _ = local.hub.open_upstream(CENTRAL)
    fx = local.hub.receive(l_conn, encode(Error(PeerId("central"), "Authentication failed")))
    assert fx.close == [(l_conn, CloseCode.NORMAL_CLOSURE, "refused")]
    assert not fx.send  # no error message back at a server that refused us


def test_an_upstream_that_is_this_hub_is_refused() -> None:
    local, _ = hubs()
    l_conn, _ = local.hub.open_upstream(CENTRAL)
    fx = local.hub.receive(l_conn, encode(Peer(PeerId("local"), PeerId("local"))))
    assert [c for c, _, _ in fx.close] == [l_conn]


def test_a_document_only_the_upstream_has_reaches_the_asking_client() -> None:
    local, central = hubs()
    link(local, central)
    author = central.client("author")
    doc_id = create_doc(author, title=1)
    reader = local.client("reader")
    reader.sync(doc_id, request=True)
    assert not reader.of_type(DocUnavailable)
    assert to_py(reader.docs[doc_id]) == {"title": 1}
    assert local.hub.is_loaded(doc_id)
    assert any(d == doc_id for d, _ in local.writes)  # kept here too


def test_a_document_nobody_has_is_unavailable_once_the_upstream_said_so() -> None:
    local, central = hubs()
    link(local, central)
    reader = local.client("reader")
    doc_id = generate_document_id()
    reader.sync(doc_id, request=True)
    assert len(reader.of_type(DocUnavailable)) == 1
    assert local.asked == [doc_id]
    # What went upstream was a request in the hub's own name.
    assert not local.link_closes


def test_a_silent_upstream_is_waited_for_until_the_timeout() -> None:
    local, _, reader, doc_id = asked_of_a_mute_upstream()
    assert not reader.of_type(DocUnavailable)
    assert local.asked == [doc_id]
    local.deliver(local.hub.upstream_timeout(doc_id))
    assert len(reader.of_type(DocUnavailable)) == 1
    local.deliver(local.hub.upstream_timeout(doc_id))  # twice: nothing more
    assert len(reader.of_type(DocUnavailable)) == 1


def test_an_upstream_that_drops_while_asked_settles_the_request() -> None:
    local, l_conn, reader, _ = asked_of_a_mute_upstream()
    local.deliver(local.hub.close_connection(l_conn))
    assert len(reader.of_type(DocUnavailable)) == 1
    assert not local.hub.upstream_joined("ws://mute")


def test_an_empty_answer_from_the_upstream_counts_as_unavailable() -> None:
    local, l_conn, reader, doc_id = asked_of_a_mute_upstream()
    empty = am.Document().generate_sync_message(am.SyncState())
    assert empty is not None
    local.deliver(
        local.hub.receive(
            l_conn, encode(Sync(PeerId("mute"), PeerId("local"), doc_id, empty.encode()))
        )
    )
    assert len(reader.of_type(DocUnavailable)) == 1


def test_documents_made_here_go_upstream_whatever_the_share_policy() -> None:
    local, central = hubs(share="deny")
    link(local, central)
    made = generate_document_id()
    local.deliver(local.hub.add_document(made, _doc(a=1)))
    assert central.hub.is_loaded(made)
    assert to_py(central.hub.document(made)) == {"a": 1}


def test_edits_flow_both_ways_through_the_upstream() -> None:
    local, central = hubs()
    link(local, central)
    near = local.client("near")
    doc_id = create_doc(near, n=0)
    far = central.client("far")
    far.sync(doc_id, request=True)
    assert to_py(far.docs[doc_id]) == {"n": 0}
    _edit(far, doc_id, m=1)
    assert to_py(near.docs[doc_id]) == {"n": 0, "m": 1}
    _edit(near, doc_id, k=2)
    assert to_py(far.docs[doc_id]) == {"n": 0, "m": 1, "k": 2}


def test_presence_relayed_by_the_upstream_in_another_peers_name_is_accepted() -> None:
    local, central = hubs()
    l_conn, _ = link(local, central)
    near = local.client("near")
    doc_id = create_doc(near, n=0)
    # The upstream relays a peer of its own's presence, in that peer's name.
    relayed = Ephemeral(PeerId("far"), PeerId("local"), doc_id, "session", 1, b"\xa0")
    local.deliver(local.hub.receive(l_conn, encode(relayed)))
    (got,) = near.of_type(Ephemeral)
    assert got.sender_id == "far"
    assert local.hub.upstream_joined(CENTRAL)


def test_documents_changed_while_the_upstream_was_away_are_loaded_and_pushed() -> None:
    stored: set[DocumentId] = set()
    local, central = hubs(stored=stored, upstreams=[CENTRAL])
    near = local.client("near")
    doc_id = create_doc(near, n=1)
    stored.add(doc_id)
    local.deliver(local.hub.close_connection(near.conn))
    local.deliver(local.hub.unload(doc_id))
    assert not local.hub.is_loaded(doc_id)
    local.loads.clear()
    link(local, central)
    assert local.loads == [doc_id]
    data = b"".join(d for i, d in local.writes if i == doc_id)
    local.deliver(stored_into(local.hub, doc_id, data))
    assert central.hub.is_loaded(doc_id)
    assert to_py(central.hub.document(doc_id)) == {"n": 1}


def test_an_upstream_in_sync_does_not_keep_a_document_in_memory() -> None:
    local, central = hubs()
    link(local, central)
    near = local.client("near")
    doc_id = create_doc(near, n=1)
    local.deliver(local.hub.close_connection(near.conn))
    assert local.hub.peer_count(doc_id) == 1  # the upstream only
    assert local.hub.unloadable(doc_id)
    local.deliver(local.hub.unload(doc_id))
    assert not local.hub.is_loaded(doc_id)


def test_an_upstream_that_lacks_changes_keeps_the_document_in_memory() -> None:
    local, _ = hubs()
    mute_upstream(local)
    near = local.client("near")
    doc_id = create_doc(near, n=1)
    local.deliver(local.hub.close_connection(near.conn))
    assert not local.hub.unloadable(doc_id)


@pytest.mark.parametrize("message", ["join", "spoofed sync"])
def test_an_upstream_is_checked_like_any_peer(message: str) -> None:
    local, _ = hubs()
    l_conn = mute_upstream(local)
    if message == "join":
        msg: object = Join(PeerId("mute"))
    else:
        msg = Request(PeerId("someone"), PeerId("local"), generate_document_id(), b"")
    fx = local.hub.receive(l_conn, encode(msg))  # type: ignore[arg-type]
    assert [c for c, _, _ in fx.close] == [l_conn]


def _doc(**values: int) -> am.Document:
    return new_document(values)


def _edit(client: Client, doc_id: DocumentId, **values: int) -> None:
    edit(client.docs[doc_id], **values)
    client.sync(doc_id)


def test_presence_of_a_local_peer_reaches_the_upstreams_peers() -> None:
    local, central = hubs()
    link(local, central)
    near = local.client("near")
    doc_id = create_doc(near, n=0)
    far = central.client("far")
    far.sync(doc_id, request=True)
    near.send(Ephemeral(PeerId("near"), PeerId("local"), doc_id, "s", 1, b"\xa0"))
    (got,) = far.of_type(Ephemeral)
    assert got.sender_id == "near"


def test_a_client_with_storage_may_relay_presence_of_peers_not_connected_here() -> None:
    world = World(Hub(peer_id=PeerId("server"), storage_id="s"))
    relay = world.client("relay", storage_id="relay-storage", is_ephemeral=False)
    plain = world.client("plain")
    doc_id = create_doc(relay, n=0)
    plain.sync(doc_id, request=True)
    relay.send(Ephemeral(PeerId("far-away"), PeerId("server"), doc_id, "s", 1, b"\xa0"))
    assert [m.sender_id for m in plain.of_type(Ephemeral)] == ["far-away"]
    assert not relay.closed
    # Never in the name of a peer connected here, and never from a plain
    # client: dropped (a JS repo echoes what it is sent), the link kept.
    relay.send(Ephemeral(PeerId("plain"), PeerId("server"), doc_id, "s", 2, b"\xa0"))
    other = world.client("other")
    other.sync(doc_id, request=True)
    other.send(Ephemeral(PeerId("far-away-2"), PeerId("server"), doc_id, "s", 1, b"\xa0"))
    assert [m.sender_id for m in plain.of_type(Ephemeral)] == ["far-away"]
    assert not relay.closed and not other.closed
