"""The hub's relay shortcuts: checked changes stored without asking the core,
silent peers skipped without asking the core, news held for peers that have
not answered (each checked against what the core itself does)."""

from __future__ import annotations

import random
from typing import Any

import automerge.core as am
import pytest
from test_hub import Client, create_doc, edit, make_world

from autosync_jupyter.core.document_state import PeerDoc
from autosync_jupyter.core.hub import MAX_HELD_ROUNDS, Hub
from autosync_jupyter.core.protocol import Sync, encode
from autosync_jupyter.crdt.guard import DocumentGuard
from autosync_jupyter.crdt.sync_message import acknowledgement, read_sync_message
from autosync_jupyter.crdt.values import to_py


@pytest.mark.parametrize("seed", range(6))
def test_a_peer_called_silent_gets_nothing_from_the_core(seed: int) -> None:
    """Random conversations (edits both ways, late and lost answers, a peer that
    starts over): whenever the mirror says the core has nothing for a peer,
    the core agrees; and it says so often enough to matter."""
    rng = random.Random(seed)
    server = am.Document()
    guard = DocumentGuard(server)
    peers = [(am.Document(), am.SyncState(), PeerDoc()) for _ in range(3)]
    inbox: list[tuple[int, bytes]] = []  # messages from peers, delivered late or never
    silent = 0

    def server_round(i: int) -> None:
        nonlocal silent
        doc, state, pd = peers[i]
        heads = server.get_heads()
        predicted = pd.surely_silent(heads, guard)
        message = server.generate_sync_message(pd.sync_state)
        if predicted:
            silent += 1
            assert message is None
        if message is not None:
            pd.generated(heads)
            doc.receive_sync_message(state, am.Message.decode(message.encode()))

    for _ in range(300):
        i = rng.randrange(len(peers))
        doc, state, pd = peers[i]
        action = rng.random()
        if action < 0.2:
            with doc.transaction() as tx:
                tx.put(am.ROOT, f"p{i}", am.ScalarType.Int, rng.randrange(100))
        elif action < 0.3:
            with server.transaction() as tx:
                tx.put(am.ROOT, "s", am.ScalarType.Int, rng.randrange(100))
            guard.catch_up()
        elif action < 0.55:
            message = doc.generate_sync_message(state)
            if message is not None:
                inbox.append((i, message.encode()))
        elif action < 0.8 and inbox:
            j, data = inbox.pop(rng.randrange(len(inbox)) if rng.random() < 0.3 else 0)
            if rng.random() < 0.05:
                continue  # lost
            heads_before = server.get_heads()
            server.receive_sync_message(peers[j][2].sync_state, am.Message.decode(data))
            guard.catch_up()
            peers[j][2].heard(read_sync_message(data), heads_before)
        elif action < 0.82:
            peers[i] = (am.Document(), am.SyncState(), pd)  # the peer lost everything
        else:
            server_round(i)
    assert silent >= 10


def count_verify(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = Hub._verify

    def spy(self: Hub, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(Hub, "_verify", spy)
    return calls


def test_checked_changes_are_stored_without_asking_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message of checked changes that all apply: stored from what was checked
    (a large one deflated, as the core keeps it), and the stored bytes rebuild it."""
    world = make_world()
    alice = world.client("alice")
    bob = world.client("bob")
    doc_id = create_doc(alice, v=0)
    bob.sync(doc_id, request=True)
    calls = count_verify(monkeypatch)
    writes_before = len(world.writes)
    for i in range(1, 4):
        edit(alice.docs[doc_id], v=i)
        alice.sync(doc_id)
    with alice.docs[doc_id].transaction() as tx:
        tx.put(am.ROOT, "long", am.ScalarType.Str, "y" * 3000)
    alice.sync(doc_id)
    assert calls == []
    new = b"".join(data for _, data in world.writes[writes_before:])
    assert len(new) < 1000  # the long one stored deflated
    rebuilt = am.Document.load(b"".join(data for _, data in world.writes))
    assert to_py(rebuilt) == {"v": 3, "long": "y" * 3000}
    assert to_py(bob.docs[doc_id]) == to_py(rebuilt)


def test_changes_that_waited_for_their_dependencies_take_the_checked_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = make_world()
    alice = world.client("alice")
    doc_id = create_doc(alice, v=0)
    base = alice.docs[doc_id].get_heads()
    for i in (1, 2):
        edit(alice.docs[doc_id], v=i)
    first, second = alice.docs[doc_id].get_changes(base)
    calls = count_verify(monkeypatch)
    hub = world.hub
    for change in (second, first):  # the second arrives before what it depends on
        data = _sync_message_of(change.bytes)
        world.deliver(
            hub.receive(alice.conn, encode(Sync(alice.peer_id, hub.peer_id, doc_id, data)))
        )
    assert calls  # the orphan's arrival is checked after the core applied it
    rebuilt = am.Document.load(b"".join(data for _, data in world.writes))
    assert to_py(rebuilt) == {"v": 2}


def _sync_message_of(change: bytes) -> bytes:
    from autosync_jupyter.crdt.sync_message import sync_message_of

    return sync_message_of([change])


# -- holding news for peers that have not answered -------------------------------


def held_setup() -> tuple[Hub, Client, Client, Any]:
    """A hub, a writer (alice) and a reader (bob), in sync; from here on, driven by hand."""
    world = make_world()
    alice = world.client("alice")
    bob = world.client("bob")
    doc_id = create_doc(alice, v=0)
    bob.sync(doc_id, request=True)
    assert to_py(bob.docs[doc_id]) == {"v": 0}
    return world.hub, alice, bob, doc_id


def alice_edits(hub: Hub, alice: Client, doc_id: Any, v: int) -> None:
    """Alice edits and sends; the hub's answer to her is not delivered (nor needed)."""
    doc = alice.docs[doc_id]
    edit(doc, v=v)
    message = doc.generate_sync_message(alice.states[doc_id])
    if message is None:  # still waiting for the hub's answer: start over, as after a drop
        alice.states[doc_id] = am.SyncState()
        message = doc.generate_sync_message(alice.states[doc_id])
    assert message is not None
    hub.receive(alice.conn, encode(Sync(alice.peer_id, hub.peer_id, doc_id, message.encode())))


def to_bob(hub: Hub, bob: Client, *, hold: bool) -> list[Sync]:
    return [m for c, m in hub.propagate(hold=hold).send if c == bob.conn and isinstance(m, Sync)]


def bob_answers(hub: Hub, bob: Client, message: Sync) -> None:
    doc, state = bob.docs[message.document_id], bob.states[message.document_id]
    doc.receive_sync_message(state, am.Message.decode(message.data))
    answer = doc.generate_sync_message(state)
    assert answer is not None
    hub.receive(
        bob.conn, encode(Sync(bob.peer_id, hub.peer_id, message.document_id, answer.encode()))
    )


def test_news_waits_for_an_answer_only_when_holding_and_only_so_long() -> None:
    hub, alice, bob, doc_id = held_setup()
    alice_edits(hub, alice, doc_id, 1)
    assert len(to_bob(hub, bob, hold=True)) == 1  # bob had answered all: news goes at once
    alice_edits(hub, alice, doc_id, 2)  # bob does not answer
    for _ in range(MAX_HELD_ROUNDS):
        assert to_bob(hub, bob, hold=True) == []
        assert doc_id in hub.dirty_documents()  # still owed
    assert len(to_bob(hub, bob, hold=True)) == 1  # held no longer than that


def test_an_answer_releases_held_news_at_once() -> None:
    hub, alice, bob, doc_id = held_setup()
    alice_edits(hub, alice, doc_id, 1)
    (sent,) = to_bob(hub, bob, hold=True)
    alice_edits(hub, alice, doc_id, 2)
    assert to_bob(hub, bob, hold=True) == []
    bob_answers(hub, bob, sent)
    (later,) = to_bob(hub, bob, hold=True)
    bob_answers(hub, bob, later)
    assert to_py(bob.docs[doc_id]) == {"v": 2}


def test_without_holding_every_round_reaches_a_silent_peer() -> None:
    hub, alice, bob, doc_id = held_setup()
    for v in (1, 2, 3):
        alice_edits(hub, alice, doc_id, v)
        assert len(to_bob(hub, bob, hold=False)) == 1


# -- an answer owed to a peer that says it holds our heads -----------------------


def bob_crosses_news() -> tuple[Hub, Client, Client, Any, Sync]:
    """News for bob crosses his own change; his answer to it then names exactly
    the hub's heads, while the hub still owes him an answer to his change: the
    answer waits for the document's round (the core alone would never send it).

    Returns the hub, alice, bob, the document and the news. The cores' Bloom
    filters can hide a change for a round (a false positive, ~1%), which makes
    another conversation than this one: then it is played again.
    """
    for _ in range(20):
        hub, alice, bob, doc_id = held_setup()
        alice_edits(hub, alice, doc_id, 1)
        (news,) = to_bob(hub, bob, hold=False)
        doc, state = bob.docs[doc_id], bob.states[doc_id]
        with doc.transaction() as tx:
            tx.put(am.ROOT, "w", am.ScalarType.Int, 1)
        change = doc.generate_sync_message(state)
        assert change is not None
        hub.receive(bob.conn, encode(Sync(bob.peer_id, hub.peer_id, doc_id, change.encode())))
        doc.receive_sync_message(state, am.Message.decode(news.data))
        answer = doc.generate_sync_message(state)
        assert answer is not None
        if read_sync_message(answer.encode()).changes:
            continue  # the change hid from bob's first message
        data = encode(Sync(bob.peer_id, hub.peer_id, doc_id, answer.encode()))
        fx = hub.receive(bob.conn, data)
        if hub.document(doc_id).get_heads() != doc.get_heads():
            continue
        assert [m for c, m in fx.send if c == bob.conn] == []
        return hub, alice, bob, doc_id, news
    raise AssertionError("the crossing never happened")


def test_an_owed_answer_is_the_acknowledgement_the_core_would_write() -> None:
    hub, _alice, bob, doc_id, news = bob_crosses_news()
    (answer,) = to_bob(hub, bob, hold=False)
    heads = hub.document(doc_id).get_heads()
    assert answer.data == acknowledgement(heads, news.data[0])  # the core's version byte
    doc, state = bob.docs[doc_id], bob.states[doc_id]
    doc.receive_sync_message(state, am.Message.decode(answer.data))
    assert doc.generate_sync_message(state) is None  # bob knows the hub has his change
    assert to_bob(hub, bob, hold=False) == []  # and nothing more is owed


def test_an_owed_answer_rides_with_news_that_came_meanwhile() -> None:
    hub, alice, bob, doc_id, _news = bob_crosses_news()
    alice_edits(hub, alice, doc_id, 2)
    (answer,) = to_bob(hub, bob, hold=False)  # one message, not an acknowledgement and news
    heads = hub.document(doc_id).get_heads()
    assert list(read_sync_message(answer.data).heads) == heads
    doc, state = bob.docs[doc_id], bob.states[doc_id]
    doc.receive_sync_message(state, am.Message.decode(answer.data))
    for _ in range(5):  # (a Bloom filter's false positive costs another round)
        if doc.get_heads() == heads:
            break
        reply = doc.generate_sync_message(state)
        if reply is not None:
            data = encode(Sync(bob.peer_id, hub.peer_id, doc_id, reply.encode()))
            hub.receive(bob.conn, data)
        for message in to_bob(hub, bob, hold=False):
            doc.receive_sync_message(state, am.Message.decode(message.data))
    assert to_py(doc) == {"v": 2, "w": 1}
