"""The hub's state machine for each document, and for each peer's view of one.

In the spirit of h11's ``_state.py``: everything that affects the state
machine lives here. The hub (:mod:`.hub`) decides *when* something happened
and what to send; the methods here are the only code that changes a
document's :class:`DocState` or a peer's :class:`PeerStatus`, and they
follow the tables below. A transition the tables do not hold raises
:class:`ImpossibleTransition`: a bug in the hub, never a peer's doing.

A document (:class:`Doc`) is in one of four states, and holds a core
document exactly when it is READY:

=========  ===================================================================
LOADING    in the store, not in memory yet (messages about it wait for it)
READY      in memory (possibly without changes yet)
MISSING    nobody here has it (peers that asked stay registered)
BROKEN     stored bytes Automerge cannot load: never written to
=========  ===================================================================

Its transitions (``-``: the hub holds no record of the document):

=========  ===============  =========  =======================================
from       event            to         when
=========  ===============  =========  =======================================
``-``      LOAD             LOADING    the store holds an id a peer needs
``-``      NOT_FOUND        MISSING    a peer asks for an id nobody has
``-``      ADD              READY      :meth:`.Hub.add_document`
LOADING    LOADED           READY      the store gave the document
LOADING    LOADED_NOTHING   MISSING    the store's bytes were all set aside
LOADING    LOAD_FAILED      BROKEN     the stored bytes do not load at all
MISSING    ARRIVE           READY      a peer sends changes, or (R mode) a
                                       request creates it empty
MISSING    ADD              READY      :meth:`.Hub.add_document`
BROKEN     ADD              READY      :meth:`.Hub.add_document`
READY      ABANDON          MISSING    the message that created it was refused
READY      RELOAD           LOADING    rolled back: reload what was stored
READY      DROP             MISSING    rolled back, and nothing was stored
READY      FORGET           ``-``      its last peer left, nothing stored
READY      UNLOAD           ``-``      idle: no peer engaged, everything of it
                                       stored (it is loaded again when needed)
MISSING    FORGET           ``-``      its last peer left, nothing stored
=========  ===============  =========  =======================================

A peer's status for a document (:class:`PeerDoc`) is what it last said or
was told; it starts UNKNOWN and never returns there:

================  ===========  ==============================================
event             to           when
================  ===========  ==============================================
REQUEST           WANTS        the peer sent a ``request``
DATA              HAS          its sync message advertises heads
TOLD_UNAVAILABLE  UNAVAILABLE  the hub told it ``doc-unavailable``
SAID_UNAVAILABLE  UNAVAILABLE  it told the hub ``doc-unavailable``
================  ===========  ==============================================

Every event may follow every status.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, TypeAlias

import automerge.core as am

from ..crdt.changes import ChangeInfo
from ..crdt.guard import DocumentGuard
from ..crdt.sync_message import SyncMessage, acknowledgement
from ..ids import DocumentId

__all__ = [
    "DOC_TRANSITIONS",
    "PEER_TRANSITIONS",
    "ConnectionId",
    "Doc",
    "DocEvent",
    "DocState",
    "ImpossibleTransition",
    "PeerDoc",
    "PeerEvent",
    "PeerStatus",
]

ConnectionId: TypeAlias = int


class ImpossibleTransition(RuntimeError):
    """A state change that the rules of this module do not allow (a bug in the hub)."""


class DocState(Enum):
    """Where a document is, as far as the hub is concerned."""

    LOADING = "loading"  # in the store, not in memory yet
    READY = "ready"  # in memory (possibly without changes)
    MISSING = "missing"  # nobody here has it
    BROKEN = "broken"  # stored bytes Automerge cannot load: never written to


class DocEvent(Enum):
    """What can happen to a document; see the table in the module docstring."""

    LOAD = "load"
    NOT_FOUND = "not found"
    ADD = "add"
    LOADED = "loaded"
    LOADED_NOTHING = "loaded nothing"
    LOAD_FAILED = "load failed"
    ARRIVE = "arrive"
    ABANDON = "abandon"
    RELOAD = "reload"
    DROP = "drop"
    FORGET = "forget"
    UNLOAD = "unload"


#: ``(state, event): next state``; None stands for "no record" on either side.
DOC_TRANSITIONS: Final[dict[tuple[DocState | None, DocEvent], DocState | None]] = {
    (None, DocEvent.LOAD): DocState.LOADING,
    (None, DocEvent.NOT_FOUND): DocState.MISSING,
    (None, DocEvent.ADD): DocState.READY,
    (DocState.LOADING, DocEvent.LOADED): DocState.READY,
    (DocState.LOADING, DocEvent.LOADED_NOTHING): DocState.MISSING,
    (DocState.LOADING, DocEvent.LOAD_FAILED): DocState.BROKEN,
    (DocState.MISSING, DocEvent.ARRIVE): DocState.READY,
    (DocState.MISSING, DocEvent.ADD): DocState.READY,
    (DocState.BROKEN, DocEvent.ADD): DocState.READY,
    (DocState.READY, DocEvent.ABANDON): DocState.MISSING,
    (DocState.READY, DocEvent.RELOAD): DocState.LOADING,
    (DocState.READY, DocEvent.DROP): DocState.MISSING,
    (DocState.READY, DocEvent.FORGET): None,
    (DocState.READY, DocEvent.UNLOAD): None,
    (DocState.MISSING, DocEvent.FORGET): None,
}


class PeerStatus(Enum):
    """What a peer last said of a document, or was told."""

    UNKNOWN = "unknown"
    HAS = "has"
    WANTS = "wants"
    UNAVAILABLE = "unavailable"


class PeerEvent(Enum):
    """What a peer says of a document, or is told; see the module docstring."""

    REQUEST = "request"
    DATA = "data"
    TOLD_UNAVAILABLE = "told unavailable"
    SAID_UNAVAILABLE = "said unavailable"


#: ``event: next status``, whatever the status before.
PEER_TRANSITIONS: Final[dict[PeerEvent, PeerStatus]] = {
    PeerEvent.REQUEST: PeerStatus.WANTS,
    PeerEvent.DATA: PeerStatus.HAS,
    PeerEvent.TOLD_UNAVAILABLE: PeerStatus.UNAVAILABLE,
    PeerEvent.SAID_UNAVAILABLE: PeerStatus.UNAVAILABLE,
}


def _next_state(state: DocState | None, event: DocEvent) -> DocState | None:
    try:
        return DOC_TRANSITIONS[(state, event)]
    except KeyError:
        before = state.name if state is not None else "no record"
        raise ImpossibleTransition(f"a document cannot go {event.name} from {before}") from None


@dataclass
class PeerDoc:
    """One connected peer's view of one document: its status and its sync bookkeeping."""

    sync_state: am.SyncState = field(default_factory=am.SyncState)
    interacted: bool = False
    # Generating a sync message is the costliest call on the hot path; it
    # can only yield something if the document changed since the last call
    # for this peer or the peer has spoken since.
    synced_version: int = -1
    owes_reply: bool = False
    # The document version at which the core last had nothing to send this
    # peer: it has everything (what lets an upstream server go idle).
    quiet_version: int = -1
    _status: PeerStatus = field(default=PeerStatus.UNKNOWN, init=False)
    # What decides whether the core's next message to the peer can be
    # anything at all, mirrored from the messages in and out (the binding
    # hides the sync state): the call walks the document's whole history
    # before it finds it has nothing to say. See :meth:`surely_silent`.
    _responded: bool = field(default=False, init=False)
    _sent_heads: list[bytes] | None = field(default=None, init=False)
    _in_flight: bool = field(default=False, init=False)
    _their_heads: list[bytes] | None = field(default=None, init=False)
    _their_need: bool = field(default=False, init=False)
    _their_sync: tuple[bytes, ...] = field(default=(), init=False)
    # Whether the peer owes an answer to the last message (it brought
    # heads the peer lacked), and for how many rounds news was held back
    # waiting for it.
    _expects_answer: bool = field(default=False, init=False)
    held: int = field(default=0, init=False)
    # The peer, owed an answer, said it holds exactly our heads: from then
    # on the core believes it told the peer so and would never answer. The
    # next message to the peer does; else :meth:`take_acknowledgement`.
    owes_ack: bool = field(default=False, init=False)
    # The version byte of the core's messages to this peer (0x42 until it
    # writes one: every core reads it).
    _message_version: int = field(default=0x42, init=False)

    @property
    def status(self) -> PeerStatus:
        """What the peer last said of the document, or was told."""
        return self._status

    def _go(self, event: PeerEvent) -> None:
        self._status = PEER_TRANSITIONS[event]

    def requested(self) -> None:
        """REQUEST: the peer asked for the document."""
        self._go(PeerEvent.REQUEST)

    def brought_data(self) -> None:
        """DATA: the peer's sync message advertises heads: it has the document."""
        self._go(PeerEvent.DATA)

    def said_unavailable(self) -> None:
        """SAID_UNAVAILABLE: the peer told the hub it has no copy."""
        self._go(PeerEvent.SAID_UNAVAILABLE)

    def tell_unavailable(self, *, again: bool) -> bool:
        """TOLD_UNAVAILABLE, unless the peer was told so already; return whether to tell it.

        A request (``again``) is always answered; other messages only once.
        """
        if again or self._status is not PeerStatus.UNAVAILABLE:
            self._go(PeerEvent.TOLD_UNAVAILABLE)
            return True
        return False

    def restart(self) -> None:
        """Start the sync over from nothing (the document was dropped from memory)."""
        self.sync_state = am.SyncState()
        self.owes_reply = True
        self.synced_version = -1
        self.quiet_version = -1
        self._responded = self._in_flight = self._their_need = False
        self._sent_heads = self._their_heads = None
        self._their_sync = ()
        self._expects_answer = False
        self.held = 0
        self.owes_ack = False

    def generated(self, heads: list[bytes], version: int | None = None) -> None:
        """The core made a message for the peer; the document's heads were ``heads``.

        ``version``: the message's version byte.
        """
        self._responded = self._in_flight = True
        self._expects_answer = self._their_heads != heads
        self._sent_heads = heads
        self.held = 0
        self.owes_ack = False
        if version is not None:
            self._message_version = version

    def take_acknowledgement(self, heads: list[bytes]) -> bytes | None:
        """The acknowledgement owed to the peer, when the core has nothing to send it.

        The message the core would write (:func:`acknowledgement`) had it
        not been told the peer knows our heads; only while the mirror says
        the peer holds exactly ``heads`` (the document's) and asks for
        nothing, else nothing is owed any more. Sending it leaves the core's
        state as it is: the core already counts these heads as told.
        """
        if not self.owes_ack:
            return None
        self.owes_ack = False
        if self._their_heads != heads or self._their_need:
            return None
        return acknowledgement(heads, self._message_version)

    def heard(self, message: SyncMessage, heads_before: list[bytes]) -> None:
        """The core took ``message`` from the peer; the document's heads were ``heads_before``."""
        # As the core's receive_sync_message, in its order.
        self._in_flight = False
        heads = list(message.heads)
        if not message.changes and heads == heads_before:
            self._sent_heads = heads
        if not heads:
            self._sent_heads = []  # the peer lost everything: the core starts over
        self._their_heads = heads
        self._their_need = bool(message.need)
        self._their_sync = message.last_sync or ()

    @property
    def unanswered(self) -> bool:
        """Whether the peer has not yet answered a message that brought it news.

        A peer's core answers such a message (its heads change, or it asks
        for what it lacks); until it does, more news only adds to what it
        has still to read.
        """
        return self._in_flight and self._expects_answer

    def surely_silent(self, heads: list[bytes], guard: DocumentGuard | None) -> bool:
        """Whether the core, the document at ``heads``, certainly has no message for the peer.

        The core's own test, on the mirrored state: nothing new since its
        last message and either no answer to it yet, or the peer holding
        exactly these heads and asking for nothing; and the document holds
        what the peer's last summary names (else the core starts over with
        it), which ``guard``, if it is up to date, tells. When in doubt, False.
        """
        if not self._responded or self._sent_heads != heads:
            return False
        if self._their_sync and (
            guard is None
            or guard.heads != heads
            or not all(guard.knows(h) for h in self._their_sync)
        ):
            return False
        if self._in_flight:
            return True
        return self._their_heads == heads and not self._their_need


class Doc:
    """One document the hub knows of: its state, its core document when READY, its peers.

    Make one with :meth:`to_load`, :meth:`not_found` or :meth:`added`; its
    state then changes only through the methods named after the events.
    The other attributes are the hub's bookkeeping, which it changes itself.
    """

    def __init__(self, doc_id: DocumentId, event: DocEvent) -> None:
        state = _next_state(None, event)
        assert state is not None
        self.doc_id = doc_id
        self._state: DocState = state
        self._document: am.Document | None = None
        #: Heads of everything handed to storage so far.
        self.saved_heads: list[bytes] = []
        #: Engaged peers: "engaged" is tracked apart from "has a sync state".
        self.peers: dict[ConnectionId, PeerDoc] = {}
        #: Bumped whenever the heads change, or the document is replaced.
        self.version = 0
        #: What incoming changes are checked against; built on the first of them.
        self.guard: DocumentGuard | None = None
        #: Changes the core holds until their dependencies arrive: who sent
        #: them, and what reading them said (checked when they are applied).
        self.orphans: dict[bytes, tuple[ConnectionId, ChangeInfo]] = {}
        #: Stored changes whose dependencies were lost (damaged on disk):
        #: kept, by hash, and applied once a peer brings what they wait for.
        self.waiting: dict[bytes, bytes] = {}
        #: Upstream connections asked for the document that have not answered.
        self.asking: set[ConnectionId] = set()
        self._problem: str | None = None

    def __repr__(self) -> str:
        return f"<Doc {self.doc_id} {self._state.name} peers={len(self.peers)}>"

    # -- records

    @classmethod
    def to_load(cls, doc_id: DocumentId) -> Doc:
        """LOAD: a record for a stored document the hub must read first."""
        return cls(doc_id, DocEvent.LOAD)

    @classmethod
    def not_found(cls, doc_id: DocumentId) -> Doc:
        """NOT_FOUND: a record for an id asked for that nobody has."""
        return cls(doc_id, DocEvent.NOT_FOUND)

    @classmethod
    def added(cls, doc_id: DocumentId, document: am.Document) -> Doc:
        """ADD: a record for a document made on the server side."""
        doc = cls(doc_id, DocEvent.ADD)
        doc._document = document
        return doc

    # -- queries

    @property
    def state(self) -> DocState:
        """Where the document is."""
        return self._state

    @property
    def doc(self) -> am.Document | None:
        """The core document: present exactly when READY."""
        return self._document

    @property
    def problem(self) -> str | None:
        """Why the stored document could not be read (the hub shows it while not READY)."""
        return self._problem

    def can(self, event: DocEvent) -> bool:
        """Whether ``event`` may happen in the document's present state."""
        return (self._state, event) in DOC_TRANSITIONS

    def heads(self) -> list[bytes]:
        """The core document's heads (none while it is not READY)."""
        return self._document.get_heads() if self._document is not None else []

    def has_data(self) -> bool:
        """Whether the document holds any change."""
        return self._document is not None and bool(self._document.get_heads())

    def forgettable(self, stored: Container[DocumentId]) -> bool:
        """FORGET may happen: no peer is engaged and nothing of it was ever stored."""
        return (
            not self.peers
            and not self.saved_heads
            and self.doc_id not in stored
            and self.can(DocEvent.FORGET)
        )

    def unloadable(self, detachable: Container[ConnectionId] = ()) -> bool:
        """UNLOAD may happen: what dropping it from memory loses, the store gives back.

        No peer is engaged (a peer's sync state would be lost), no change
        waits on a peer for its dependencies (those are only in memory), and
        everything it holds was handed to storage. Stored changes that wait
        for lost dependencies (:attr:`waiting`) came from the store and are
        kept there, so they do not hold it. Peers in ``detachable`` (upstream
        servers that have everything) do not hold it either: the hub lets
        them go first.
        """
        return (
            self._state is DocState.READY
            and all(conn_id in detachable for conn_id in self.peers)
            and not self.orphans
            and bool(self.saved_heads)
            and self.heads() == self.saved_heads
        )

    # -- transitions

    def _go(self, event: DocEvent) -> DocState:
        state = _next_state(self._state, event)
        assert state is not None, "FORGET is the hub's: it drops the record"
        return state

    def unload(self) -> None:
        """UNLOAD: leave memory; the hub drops the record (see :meth:`unloadable`)."""
        if not self.unloadable():
            raise ImpossibleTransition(f"document {self.doc_id} is not idle: cannot UNLOAD it")
        _next_state(self._state, DocEvent.UNLOAD)
        self._document = None
        self.guard = None
        self.waiting = {}

    def add(self, document: am.Document) -> None:
        """ADD: a document made on the server side takes the place of a missing or broken one."""
        self._state = self._go(DocEvent.ADD)
        self._document = document

    def finish_load(
        self,
        document: am.Document | None,
        *,
        waiting: dict[bytes, bytes] | None = None,
        problem: str | None = None,
    ) -> None:
        """LOADED (``document``) or LOADED_NOTHING (None): what the store held.

        ``waiting``: stored changes whose dependencies are missing, by hash;
        ``problem``: why the store held less than it listed.
        """
        event = DocEvent.LOADED if document is not None else DocEvent.LOADED_NOTHING
        state = self._go(event)
        self.guard = None
        self.waiting = {}
        self._problem = problem
        if document is not None:
            self._document = document
            self.saved_heads = document.get_heads()
            self.waiting = dict(waiting or {})
        self._state = state
        self.version += 1

    def fail_load(self, reason: str) -> None:
        """LOAD_FAILED: the stored bytes do not load; nothing is ever written to it."""
        self._state = self._go(DocEvent.LOAD_FAILED)
        self._problem = reason
        self.version += 1

    def arrive(self, document: am.Document) -> None:
        """ARRIVE: a missing document comes into being (a peer's changes, or R mode)."""
        self._state = self._go(DocEvent.ARRIVE)
        self._document = document

    def abandon(self) -> None:
        """ABANDON: the message that created the document was refused; it is missing again."""
        self._state = self._go(DocEvent.ABANDON)
        self._document = None
        self.guard = None

    def roll_back(self, stored: Container[DocumentId]) -> bool:
        """RELOAD (anything of it stored) or DROP (nothing): drop the core document.

        Its peers start their sync over with fresh states. Returns whether
        the document must be loaded from storage again.
        """
        event = DocEvent.RELOAD if self.saved_heads or self.doc_id in stored else DocEvent.DROP
        state = self._go(event)
        self._document = None
        self.guard = None
        self.waiting = {}
        self.version += 1
        for peer in self.peers.values():
            peer.restart()
        self._state = state
        return state is DocState.LOADING
