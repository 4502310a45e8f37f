"""The hub's per-document state machine, without a hub or a socket (core/document_state.py)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import automerge.core as am
import pytest

from autosync_jupyter.core import document_state
from autosync_jupyter.core.document_state import (
    DOC_TRANSITIONS,
    PEER_TRANSITIONS,
    Doc,
    DocEvent,
    DocState,
    ImpossibleTransition,
    PeerDoc,
    PeerEvent,
    PeerStatus,
)
from autosync_jupyter.crdt.values import new_document
from autosync_jupyter.ids import DocumentId, generate_document_id

NOTHING_STORED: frozenset[DocumentId] = frozenset()


def with_changes() -> am.Document:
    return new_document({"text": "hello"})


def doc_in(state: DocState) -> Doc:
    """A record brought into ``state`` by legal transitions only."""
    doc_id = generate_document_id()
    if state is DocState.LOADING:
        return Doc.to_load(doc_id)
    if state is DocState.MISSING:
        return Doc.not_found(doc_id)
    if state is DocState.READY:
        return Doc.added(doc_id, am.Document())
    doc = Doc.to_load(doc_id)
    doc.fail_load("unreadable")
    return doc


def loaded() -> Doc:
    """A READY record whose every change came from (so is in) the store."""
    doc = Doc.to_load(generate_document_id())
    doc.finish_load(with_changes())
    return doc


def state_of(doc: Doc) -> DocState:
    """``doc.state``, read afresh (a type checker keeps what it read before a call)."""
    return doc.state


def status_of(peer: PeerDoc) -> PeerStatus:
    return peer.status


# What each event is, as a call on an existing record (the events from "no
# record" are the constructors).
EVENT_CALLS: dict[DocEvent, Callable[[Doc], object]] = {
    DocEvent.ADD: lambda doc: doc.add(am.Document()),
    DocEvent.LOADED: lambda doc: doc.finish_load(with_changes()),
    DocEvent.LOADED_NOTHING: lambda doc: doc.finish_load(None),
    DocEvent.LOAD_FAILED: lambda doc: doc.fail_load("unreadable"),
    DocEvent.ARRIVE: lambda doc: doc.arrive(am.Document()),
    DocEvent.ABANDON: lambda doc: doc.abandon(),
    DocEvent.RELOAD: lambda doc: doc.roll_back({doc.doc_id}),
    DocEvent.DROP: lambda doc: doc.roll_back(NOTHING_STORED),
    DocEvent.UNLOAD: lambda doc: doc.unload(),
}

LEGAL = sorted(
    ((state, event, target) for (state, event), target in DOC_TRANSITIONS.items()),
    key=str,
)
ILLEGAL = [
    (state, event)
    for state, event in itertools.product(DocState, EVENT_CALLS)
    if (state, event) not in DOC_TRANSITIONS
]


# -- documents: the table


@pytest.mark.parametrize(("state", "event", "target"), LEGAL, ids=str)
def test_each_legal_transition_reaches_its_state(
    state: DocState | None, event: DocEvent, target: DocState | None
) -> None:
    """Every row of the table, taken through the method named after its event."""
    doc_id = generate_document_id()
    if state is None:
        constructors = {DocEvent.LOAD: Doc.to_load, DocEvent.NOT_FOUND: Doc.not_found}
        if event is DocEvent.ADD:
            doc = Doc.added(doc_id, am.Document())
        else:
            doc = constructors[event](doc_id)
    elif event is DocEvent.FORGET:
        doc = doc_in(state)
        assert doc.forgettable(NOTHING_STORED)
        assert target is None  # the hub drops the record
        return
    elif event is DocEvent.UNLOAD:
        doc = loaded()
        assert doc.unloadable()
        doc.unload()
        assert target is None  # the hub drops the record
        assert doc.doc is None
        return
    else:
        doc = doc_in(state)
        assert doc.can(event)
        EVENT_CALLS[event](doc)
    assert doc.state is target
    # The invariant: a core document exactly when READY.
    assert (doc.doc is not None) == (doc.state is DocState.READY)


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=str)
def test_impossible_transitions_are_refused_and_change_nothing(
    state: DocState, event: DocEvent
) -> None:
    doc = doc_in(state)
    before = (doc.state, doc.doc, doc.version, doc.problem)
    assert not doc.can(event)
    with pytest.raises(ImpossibleTransition, match=event.name):
        EVENT_CALLS[event](doc)
    assert (doc.state, doc.doc, doc.version, doc.problem) == before


@pytest.mark.parametrize("state", [DocState.LOADING, DocState.BROKEN])
def test_a_loading_or_broken_document_is_never_forgotten(state: DocState) -> None:
    doc = doc_in(state)
    assert not doc.can(DocEvent.FORGET)
    assert not doc.forgettable(NOTHING_STORED)


def test_every_event_has_a_way_in() -> None:
    """Each event appears in the table; the two kinds of rollback and loads are distinct rows."""
    assert {event for _, event in DOC_TRANSITIONS} == set(DocEvent)
    reached = set(DOC_TRANSITIONS.values()) - {None}
    assert reached == set(DocState)


def test_the_docstring_tables_are_the_tables() -> None:
    """The tables in the module docstring say what the code does, row for row."""
    text = document_state.__doc__ or ""
    names = "|".join(state.name for state in DocState)
    rows = re.findall(rf"^(``-``|{names})\s+([A-Z_]+)\s+(``-``|{names})\s", text, re.MULTILINE)

    def state(name: str) -> DocState | None:
        return None if name == "``-``" else DocState[name]

    documented = {(state(a), DocEvent[event]): state(b) for a, event, b in rows}
    assert documented == DOC_TRANSITIONS
    peer_rows = re.findall(r"^([A-Z_]+)\s+(WANTS|HAS|UNAVAILABLE)\s", text, re.MULTILINE)
    assert {PeerEvent[e]: PeerStatus[s] for e, s in peer_rows} == PEER_TRANSITIONS


# -- documents: what each transition carries


def test_a_load_brings_the_document_its_heads_and_waiting_changes() -> None:
    doc = Doc.to_load(generate_document_id())
    document = with_changes()
    version = doc.version
    doc.finish_load(document, waiting={b"h": b"chunk"}, problem="some bytes set aside")
    assert doc.state is DocState.READY
    assert doc.doc is document
    assert doc.saved_heads == document.get_heads()
    assert doc.waiting == {b"h": b"chunk"}
    assert doc.problem == "some bytes set aside"
    assert doc.has_data() and doc.heads() == document.get_heads()
    assert doc.version == version + 1


def test_a_load_of_nothing_leaves_it_missing_with_its_problem() -> None:
    doc = Doc.to_load(generate_document_id())
    doc.finish_load(None, waiting={b"h": b"chunk"}, problem="all damaged")
    assert doc.state is DocState.MISSING
    assert doc.doc is None and doc.waiting == {} and doc.problem == "all damaged"
    assert doc.heads() == [] and not doc.has_data()


def test_a_failed_load_is_broken_and_says_why() -> None:
    doc = Doc.to_load(generate_document_id())
    doc.fail_load("does not load")
    assert doc.state is DocState.BROKEN and doc.problem == "does not load"
    doc.add(with_changes())  # the server may put a document in its place
    assert state_of(doc) is DocState.READY


def test_a_late_arrival_after_a_missing_document() -> None:
    doc = Doc.not_found(generate_document_id())
    document = am.Document()
    doc.arrive(document)
    assert doc.state is DocState.READY and doc.doc is document
    doc.abandon()
    assert state_of(doc) is DocState.MISSING and doc.doc is None and doc.guard is None


def test_a_rollback_reloads_what_was_stored_and_restarts_every_peer() -> None:
    doc = Doc.added(generate_document_id(), with_changes())
    doc.saved_heads = doc.heads()  # handed to storage
    doc.waiting = {b"h": b"chunk"}
    peer = doc.peers[1] = PeerDoc(interacted=True, synced_version=7)
    peer.requested()
    version = doc.version
    assert doc.roll_back(NOTHING_STORED) is True  # saved heads: it is in the store
    assert doc.state is DocState.LOADING
    assert doc.doc is None and doc.guard is None and doc.waiting == {}
    assert doc.version == version + 1
    assert peer.owes_reply and peer.synced_version == -1 and peer.interacted
    assert peer.status is PeerStatus.WANTS  # what it said still holds


def test_a_rollback_of_a_document_never_stored_leaves_it_missing() -> None:
    doc = Doc.not_found(generate_document_id())
    doc.arrive(am.Document())
    assert doc.roll_back(NOTHING_STORED) is False
    assert doc.state is DocState.MISSING


def test_a_rollback_of_a_listed_document_reloads_it() -> None:
    doc = Doc.added(generate_document_id(), am.Document())
    assert doc.roll_back({doc.doc_id}) is True
    assert doc.state is DocState.LOADING


def test_only_a_document_nobody_holds_and_nothing_stored_is_forgotten() -> None:
    doc = Doc.not_found(generate_document_id())
    assert doc.forgettable(NOTHING_STORED)
    assert not doc.forgettable({doc.doc_id})
    doc.peers[1] = PeerDoc()
    assert not doc.forgettable(NOTHING_STORED)
    del doc.peers[1]
    doc.saved_heads = [b"\x00" * 32]
    assert not doc.forgettable(NOTHING_STORED)


def test_state_and_document_are_not_assignable() -> None:
    doc = Doc.not_found(generate_document_id())
    with pytest.raises(AttributeError):
        doc.state = DocState.READY  # type: ignore[misc]
    with pytest.raises(AttributeError):
        doc.doc = am.Document()  # type: ignore[misc]


# -- a peer's status


def test_a_peer_starts_unknown_and_follows_what_it_says() -> None:
    peer = PeerDoc()
    assert status_of(peer) is PeerStatus.UNKNOWN
    peer.requested()
    assert status_of(peer) is PeerStatus.WANTS
    peer.brought_data()
    assert status_of(peer) is PeerStatus.HAS
    peer.said_unavailable()
    assert status_of(peer) is PeerStatus.UNAVAILABLE


@pytest.mark.parametrize(
    ("before", "event"), list(itertools.product(PeerStatus, PeerEvent)), ids=str
)
def test_every_peer_event_follows_every_status(before: PeerStatus, event: PeerEvent) -> None:
    peer = PeerDoc()
    peer._status = before
    calls: dict[PeerEvent, Callable[[PeerDoc], object]] = {
        PeerEvent.REQUEST: PeerDoc.requested,
        PeerEvent.DATA: PeerDoc.brought_data,
        PeerEvent.TOLD_UNAVAILABLE: lambda p: p.tell_unavailable(again=True),
        PeerEvent.SAID_UNAVAILABLE: PeerDoc.said_unavailable,
    }
    calls[event](peer)
    assert peer.status is PEER_TRANSITIONS[event]
    assert peer.status is not PeerStatus.UNKNOWN


def test_no_peer_event_leads_back_to_unknown() -> None:
    assert PeerStatus.UNKNOWN not in PEER_TRANSITIONS.values()


def test_a_peer_is_told_unavailable_once_unless_it_asks_again() -> None:
    peer = PeerDoc()
    assert peer.tell_unavailable(again=False) is True
    assert peer.status is PeerStatus.UNAVAILABLE
    assert peer.tell_unavailable(again=False) is False  # a sync message: once
    assert peer.tell_unavailable(again=True) is True  # a request: always answered
    peer.brought_data()
    assert peer.tell_unavailable(again=False) is True


def test_a_peer_that_said_unavailable_is_not_told_again_by_a_sync_message() -> None:
    peer = PeerDoc()
    peer.said_unavailable()
    assert peer.tell_unavailable(again=False) is False


def test_restart_forgets_the_sync_but_not_the_status() -> None:
    peer = PeerDoc(interacted=True, synced_version=3)
    state = peer.sync_state
    peer.brought_data()
    peer.restart()
    assert peer.sync_state is not state
    assert peer.owes_reply and peer.synced_version == -1
    assert peer.status is PeerStatus.HAS


# -- documents: leaving memory when idle


def test_a_loaded_idle_document_may_unload() -> None:
    doc = loaded()
    assert doc.unloadable()
    assert doc.can(DocEvent.UNLOAD)


def test_a_document_with_a_peer_never_unloads() -> None:
    doc = loaded()
    doc.peers[1] = PeerDoc()
    assert not doc.unloadable()
    with pytest.raises(ImpossibleTransition, match="UNLOAD"):
        doc.unload()
    assert doc.doc is not None


def test_a_document_with_changes_not_handed_to_storage_never_unloads() -> None:
    doc = loaded()
    assert doc.doc is not None
    with doc.doc.transaction() as tx:
        tx.put(am.ROOT, "more", am.ScalarType.Str, "x")
    assert not doc.unloadable()


def test_a_document_holding_changes_that_wait_for_a_peer_never_unloads() -> None:
    doc = loaded()
    doc.orphans[b"h" * 32] = (1, None)  # type: ignore[assignment]
    assert not doc.unloadable()


def test_a_document_with_nothing_stored_is_not_unloaded_but_forgotten() -> None:
    """Made here and never stored: unloading would lose it."""
    doc = Doc.added(generate_document_id(), with_changes())
    assert not doc.unloadable()


def test_waiting_stored_changes_do_not_hold_a_document() -> None:
    """Changes waiting for lost dependencies came from the store: a reload gives them back."""
    doc = Doc.to_load(generate_document_id())
    doc.finish_load(with_changes(), waiting={b"w" * 32: b"chunk"})
    assert doc.unloadable()
    doc.unload()
    assert doc.waiting == {}
