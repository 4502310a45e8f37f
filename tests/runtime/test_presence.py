"""Presence: the table's rules (no clock, no socket), the driver, and two live connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from waiting import eventually

from autosync_jupyter import PeerPresence, Presence, SyncServer, connect
from autosync_jupyter.ids import PeerId
from autosync_jupyter.runtime.blocking import connect_blocking
from autosync_jupyter.runtime.presence import PRESENCE_MARKER, PresenceTable, peer_color

ALICE = PeerId("alice")
BOB = PeerId("bob")


def snapshot(**state: Any) -> dict[str, Any]:
    return {PRESENCE_MARKER: {"type": "snapshot", "state": state}}


def message(kind: str, **extra: Any) -> dict[str, Any]:
    return {PRESENCE_MARKER: {"type": kind, **extra}}


# -- the table ---------------------------------------------------------------------------


def test_a_snapshot_adds_a_peer_with_its_state() -> None:
    table = PresenceTable(ttl=10)
    assert table.receive(ALICE, snapshot(name="Alice", color="#123456"), 0.0, 1e9) == "snapshot"
    alice = table.peers[ALICE]
    assert (alice.name, alice.color, alice.viewing) == ("Alice", "#123456", None)
    assert alice.last_seen.tzinfo is not None


def test_updates_and_snapshots_merge_into_the_state() -> None:
    """As automerge-repo's PeerPresenceInfo: keys left out keep their value."""
    table = PresenceTable()
    table.receive(ALICE, snapshot(name="Alice", viewing=["a"]), 0.0, 0.0)
    table.receive(ALICE, message("update", channel="viewing", value=["b", 2]), 1.0, 1.0)
    table.receive(ALICE, snapshot(color="red"), 2.0, 2.0)
    assert table.peers[ALICE].state == {"name": "Alice", "viewing": ["b", 2], "color": "red"}


def test_heartbeats_keep_known_peers_and_ignore_unknown_ones() -> None:
    table = PresenceTable(ttl=10)
    table.receive(ALICE, snapshot(name="Alice"), 0.0, 0.0)
    assert table.receive(ALICE, message("heartbeat"), 8.0, 8.0) == "heartbeat"
    assert table.receive(BOB, message("heartbeat"), 8.0, 8.0) == "heartbeat"
    assert list(table.peers) == [ALICE]
    assert table.prune(15.0) == []  # seen at 8, ttl 10
    assert table.prune(18.5) == [ALICE]
    assert table.peers == {}


def test_goodbye_forgets_at_once() -> None:
    table = PresenceTable()
    table.receive(ALICE, snapshot(name="Alice"), 0.0, 0.0)
    table.receive(BOB, snapshot(name="Bob"), 0.0, 0.0)
    table.receive(ALICE, message("goodbye"), 1.0, 1.0)
    assert list(table.peers) == [BOB]


@pytest.mark.parametrize(
    "payload",
    [
        {"cursor": 3},
        b"\x00",
        None,
        {PRESENCE_MARKER: "snapshot"},
        {PRESENCE_MARKER: {"type": "snapshot", "state": [1, 2]}},
        {PRESENCE_MARKER: {"type": "update", "channel": 5, "value": 1}},
        {PRESENCE_MARKER: {"type": "dance"}},
        snapshot(**{f"k{i}": i for i in range(1000)}),
    ],
)
def test_other_and_malformed_messages_change_nothing(payload: Any) -> None:
    table = PresenceTable()
    assert table.receive(ALICE, payload, 0.0, 0.0) is None
    assert table.peers == {}


def test_peers_without_a_colour_get_a_stable_one() -> None:
    table = PresenceTable()
    table.receive(ALICE, snapshot(), 0.0, 0.0)
    assert table.peers[ALICE].color == peer_color(ALICE)
    assert table.peers[ALICE].color.startswith("#")
    assert table.peers[ALICE].label() == "alice"


# -- the driver, with a fake transport ----------------------------------------------------


class FakeLink:
    """What a DocHandle gives a Presence: send, subscribe, run in the loop."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.listeners: list[Callable[[PeerId, Any], object]] = []
        self.now = 0.0

    def subscribe(self, callback: Callable[[PeerId, Any], object]) -> Callable[[], None]:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def deliver(self, sender: PeerId, payload: Any) -> None:
        for listener in list(self.listeners):
            listener(sender, payload)

    def presence(self, **kwargs: Any) -> Presence:
        return Presence(
            self.sent.append, self.subscribe, lambda fn: fn(), clock=lambda: self.now, **kwargs
        )

    def kinds(self) -> list[str]:
        return [m[PRESENCE_MARKER]["type"] for m in self.sent]


async def test_announce_sends_a_snapshot_and_merges_later_keys() -> None:
    link = FakeLink()
    presence = link.presence()
    assert not presence.announced and link.sent == []
    presence.announce(name="Ada", color="#4363d8", viewing=["rows"])
    presence.announce(viewing=None, mood="happy")
    assert link.kinds() == ["snapshot", "snapshot"]
    assert link.sent[-1][PRESENCE_MARKER]["state"] == {
        "name": "Ada",
        "color": "#4363d8",
        "viewing": None,
        "mood": "happy",
    }
    assert presence.local["name"] == "Ada"
    presence.leave()
    assert link.kinds()[-1] == "goodbye" and not presence.announced
    presence._stop()


async def test_a_newcomer_is_answered_with_our_state_once() -> None:
    link = FakeLink()
    presence = link.presence()
    presence.announce(name="Ada")
    link.sent.clear()
    link.deliver(ALICE, snapshot(name="Alice"))
    link.deliver(BOB, snapshot(name="Bob"))
    link.deliver(ALICE, message("heartbeat"))
    await asyncio.sleep(0)  # the answer goes out on the next loop turn
    await asyncio.sleep(0)
    assert link.kinds() == ["snapshot"]
    assert {p.name for p in presence.peers.values()} == {"Alice", "Bob"}
    presence._stop()


async def test_our_own_messages_echoed_back_are_ignored() -> None:
    link = FakeLink()
    presence = Presence(
        link.sent.append, link.subscribe, lambda fn: fn(), peer_id=PeerId("me"), clock=lambda: 0.0
    )
    presence.announce(name="Ada")
    link.deliver(PeerId("me"), snapshot(name="Ada"))
    assert presence.peers == {}
    presence._stop()


async def test_a_silent_observer_does_not_answer() -> None:
    link = FakeLink()
    presence = link.presence()
    link.deliver(ALICE, snapshot(name="Alice"))
    await asyncio.sleep(0)
    assert link.sent == []
    assert list(presence.peers) == [ALICE]
    presence._stop()


async def test_peers_expire_and_callbacks_hear_of_comings_and_goings() -> None:
    link = FakeLink()
    presence = link.presence(ttl=30.0)
    seen: list[list[str]] = []
    stop = presence.on_change(lambda peers: seen.append(sorted(peers)))
    link.deliver(ALICE, snapshot(name="Alice"))
    link.deliver(BOB, snapshot(name="Bob"))
    link.deliver(BOB, message("goodbye"))
    assert seen == [["alice"], ["alice", "bob"], ["alice"]]
    link.now = 31.0
    assert presence.peers == {}  # expired, even before the timer's next run
    presence._tick()  # what the timer runs every `heartbeat` seconds
    assert seen[-1] == []
    stop()
    link.deliver(ALICE, snapshot(name="Alice"))
    assert seen[-1] == []
    presence._stop()


async def test_the_timer_sends_heartbeats_while_announced() -> None:
    link = FakeLink()
    presence = link.presence(heartbeat=0.01)
    presence.announce(name="Ada")
    deadline = time.monotonic() + 5
    while "heartbeat" not in link.kinds() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert link.kinds()[0] == "snapshot" and "heartbeat" in link.kinds()
    presence.leave()
    presence._stop()
    count = len(link.sent)
    await asyncio.sleep(0.05)
    assert len(link.sent) == count  # stopped: no more heartbeats


async def test_a_reconnect_makes_the_next_beat_a_snapshot() -> None:
    """Peers may have forgotten us meanwhile, and they ignore heartbeats of strangers."""
    link = FakeLink()
    reconnects = [0]
    presence = link.presence(reconnects=lambda: reconnects[0])
    presence.announce(name="Ada")
    presence._tick()
    reconnects[0] = 1
    presence._tick()
    presence._tick()
    assert link.kinds() == ["snapshot", "heartbeat", "snapshot", "heartbeat"]
    presence._stop()


# -- two live connections ----------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[SyncServer]:
    async with SyncServer(port=0, data_dir=None) as running:
        yield running


def names(peers: Mapping[PeerId, PeerPresence]) -> dict[str, str | None]:
    return {peer: p.name for peer, p in peers.items()}


async def test_two_connections_see_each_other_and_goodbye_on_close(server: SyncServer) -> None:
    doc_id = await server.create_document({"rows": [1, 2]})
    async with connect(server.url) as alice, connect(server.url) as bob:
        a = await alice.open(doc_id)
        b = await bob.open(doc_id)
        a.presence.announce(name="Alice", viewing=["rows", 1])
        # Bob learns Alice from her snapshot; Alice learns Bob only once he announces.
        await eventually(lambda: names(b.presence.peers) == {alice.peer_id: "Alice"})
        assert b.presence.peers[alice.peer_id].viewing == ["rows", 1]
        assert a.presence.peers == {}
        b.presence.announce(name="Bob")
        await eventually(lambda: names(a.presence.peers) == {bob.peer_id: "Bob"})
        assert "Bob" in repr(a.presence)
        await b.close()
        await eventually(lambda: a.presence.peers == {})


async def test_a_late_joiner_learns_who_is_there(server: SyncServer) -> None:
    """Announced peers answer a newcomer's first message with their state."""
    doc_id = await server.create_document({})
    async with connect(server.url) as alice, connect(server.url) as bob:
        a = await alice.open(doc_id)
        a.presence.announce(name="Alice")
        b = await bob.open(doc_id)
        assert b.presence.peers == {}
        b.presence.announce(name="Bob")
        await eventually(lambda: names(b.presence.peers) == {alice.peer_id: "Alice"})
        await eventually(lambda: names(a.presence.peers) == {bob.peer_id: "Bob"})


async def test_presence_works_from_a_blocking_handle(server: SyncServer) -> None:
    doc_id = await server.create_document({})
    async with connect(server.url) as alice:
        a = await alice.open(doc_id)
        blocking = await asyncio.to_thread(connect_blocking, server.url)
        try:
            handle = await asyncio.to_thread(blocking.open, doc_id)
            # Called from this thread, carried out in the connection's own.
            handle.presence.announce(name="Script")
            await eventually(
                lambda: names(a.presence.peers) == {blocking.connection.peer_id: "Script"}
            )
        finally:
            await asyncio.to_thread(blocking.close)
        await eventually(lambda: a.presence.peers == {})
