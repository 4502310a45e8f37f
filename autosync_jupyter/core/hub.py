"""The sync engine: documents, peers, sync states, sharing and ephemeral relay.

The hub is sans-I/O in the manner of h11 and the core of ``websockets``: it
never touches a socket, a file or a clock. A transport tells it what happened
(:meth:`Hub.open_connection`, :meth:`Hub.receive`, :meth:`Hub.close_connection`)
and gets back :class:`Effects`: messages to send on which connection,
connections to close, change bytes to make durable and documents to load
from storage. Every protocol rule can therefore be unit-tested in
microseconds, and the same hub runs under the standalone server, a notebook
kernel or a Jupyter server extension.

Rules of ``protocol.md`` that are easy to get wrong, and where they live:

* a reconnect with a known peer id replaces the old connection and starts
  from fresh sync states (:meth:`Hub._join`);
* "engaged with a document" is tracked apart from "has a sync state"
  (``Doc.peers``), so no peer silently stops receiving changes;
* a document is loaded from storage before anything is said about it
  (messages for it are parked until :meth:`Hub.document_loaded`);
* a requester told ``doc-unavailable`` stays registered and is sent the
  document when it arrives later;
* changes from one peer reach the other peers of the document once per
  :meth:`Hub.propagate`, which the transport calls once per loop turn, so a
  burst of changes costs one sync message per peer, not one per change;
* a peer's sync message reaches the Automerge core only after every change
  in it was checked, alone and against the document
  (:func:`~autosync_jupyter.crdt.guard.admit`): a change that would make the
  core panic, or leave a document that no longer loads, is refused with the
  peer that sent it (:meth:`Hub._apply_sync`);
* should the core still panic or accept something it must not, the
  document is dropped from memory and reloaded from what was stored (every
  acknowledged change is there), and only the sender is cut off
  (:meth:`Hub._rollback`);
* a peer speaks only for itself: every message must carry the peer id it
  joined with, and a live connection's peer id is not taken over by another
  identity (:meth:`Hub._join`, :meth:`Hub.probe_result`); an ephemeral
  message in another's name that the peer may not relay is dropped, not
  punished, because a stock JS repo passes every ephemeral message it gets
  on to its other peers, the hub included (:meth:`Hub._may_relay`);
* what a peer leaves behind is forgotten: documents it asked for that
  nobody has, changes whose dependencies never came (:meth:`Hub._forget_peer`);
* a document nobody is engaged with and whose every change is stored may
  leave memory (:meth:`Hub.unload`), least recently used first
  (:meth:`Hub.idle_documents`); the next message about it loads it again, so
  peers get the same answers;
* changes another server process stored in a shared store are checked
  and applied like a peer's, but never written again, and reach this
  server's peers (:meth:`Hub.stored_changes_arrived`);
* an upstream server (the hub joins it as a client, :meth:`Hub.open_upstream`)
  is a peer like the others once it answered, but it gets every document
  with changes, and a document a peer asks for that nobody here has is
  asked of it before the peer hears ``doc-unavailable``
  (:meth:`Hub._ask_upstreams`); an upstream that is in sync does not keep a
  document in memory;
* a document's state (loading, ready, missing, broken) and a peer's status
  for it change only in :mod:`.document_state`, by its transition tables.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import automerge.core as am
from websockets.frames import CloseCode

from ..crdt.binding import is_panic
from ..crdt.changes import read_change
from ..crdt.chunks import CHUNK_DOCUMENT, ChunkRejected, split_chunks
from ..crdt.guard import (
    Admission,
    DocumentGuard,
    Failure,
    Limits,
    Pending,
    Rejected,
    admit,
    verify_applied,
)
from ..crdt.sync_message import SyncMessage, SyncMessageRejected, read_sync_message, sync_message_of
from ..errors import ProtocolError
from ..ids import DocumentId, PeerId, encode_heads, generate_peer_id
from ..wording import counted, printable
from .document_state import ConnectionId, Doc, DocEvent, DocState, PeerDoc, PeerStatus
from .protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    PROTOCOL_VERSION,
    DocUnavailable,
    Ephemeral,
    Error,
    Join,
    Leave,
    Message,
    Peer,
    PeerMetadata,
    RemoteHeadsChanged,
    RemoteSubscriptionChange,
    Request,
    Sync,
    UnknownMessage,
    decode,
)

__all__ = [
    "ConnectionId",
    "DocumentInfo",
    "Effects",
    "Hub",
    "HubLimits",
    "HubView",
    "PeerInfo",
    "ShareDecision",
    "SharePolicy",
    "close_reason",
]

logger = logging.getLogger("autosync_jupyter.hub")


# A close frame's reason holds at most 123 bytes of UTF-8.
_MAX_CLOSE_REASON = 123
# Longest error text sent to a peer (the log keeps it whole).
_MAX_ERROR_TEXT = 1000


def close_reason(text: str) -> str:
    """``text`` cut to fit a WebSocket close frame (123 bytes of UTF-8), never mid-character.

    >>> close_reason("é" * 100).encode() == ("é" * 61).encode()
    True
    """
    data = text.encode("utf-8")
    if len(data) <= _MAX_CLOSE_REASON:
        return text
    return data[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


# Ephemeral de-duplication remembers this many (sender, session) pairs; the
# oldest are forgotten first, so a flood of fresh session ids cannot grow it.
_MAX_EPHEMERAL_SESSIONS = 10_000

#: How many rounds of a document :meth:`Hub.propagate` holds news back from a
#: peer that has not answered the last (a peer may never answer). Holding
#: happens only under load, where rounds are the sync interval apart: about
#: a second at the default. A peer behind by seconds (100 clients in one
#: process on 2 cores) then reads 13% fewer messages than with 3 rounds,
#: and its changes' p99 latency drops by a tenth (bench/server_bench.py).
MAX_HELD_ROUNDS = 10


@dataclass(frozen=True)
class HubLimits:
    """What one peer may make the hub hold.

    Attributes:
        message: what one sync message may unpack to (bytes, operations).
        orphan_bytes: bytes of changes whose dependencies have not arrived
            that one connection may leave with the core; beyond, the peer is
            cut off and the documents drop them.
        documents_without_data: documents one connection may keep open that
            hold nothing yet (asked for and unavailable, or announced and
            not sent); each costs a few KiB.
    """

    message: Limits
    orphan_bytes: int
    documents_without_data: int = 4096

    @classmethod
    def for_message_size(cls, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> HubLimits:
        """Limits derived from the largest message the transport accepts."""
        return cls(Limits.for_message_size(max_message_size), orphan_bytes=max_message_size)


@dataclass(frozen=True)
class PeerInfo:
    """What the hub knows about a connected peer; handed to share policies.

    Attributes:
        peer_id: the id the peer joined with.
        storage_id: its storage id, if it has durable storage.
        is_ephemeral: whether it said it keeps no state.
        identity: the authenticated identity (for example OIDC claims such as
            ``{"email": ...}``), or None when the server has no authentication.
        remote_address: where the connection comes from, for logs.
        upstream: a server this hub joined as a client
            (:meth:`Hub.open_upstream`); it gets every document, whatever
            the share policy says.
    """

    peer_id: PeerId
    storage_id: str | None = None
    is_ephemeral: bool = True
    identity: dict[str, Any] | None = None
    remote_address: str | None = None
    upstream: bool = False

    @property
    def email(self) -> str | None:
        """The authenticated email, if the identity provider verified it.

        Only ``email_verified`` as the JSON boolean ``true`` counts: an email a
        provider did not verify is anyone's to claim, so a share policy
        keyed on it never sees it.
        """
        identity = self.identity or {}
        value = identity.get("email")
        if not isinstance(value, str) or identity.get("email_verified") is not True:
            return None
        return value


ShareDecision: TypeAlias = bool | None
"""``True``: announce and allow; ``None``: allow on request only; ``False``: deny."""

SharePolicy: TypeAlias = (
    Literal["announce", "request", "deny"] | Callable[[PeerInfo, DocumentId], ShareDecision]
)
"""How documents are shared with a peer.

* ``"request"`` (default, as the public JS sync server): a peer gets a
  document only after asking for it by id;
* ``"announce"``: every document is pushed to every peer, on join and when
  a document is created;
* ``"deny"``: nothing is shared and nothing is accepted;
* a callable ``policy(peer, document_id)`` returning ``True`` / ``None`` /
  ``False`` for announce / request-only / deny, per peer and document (the
  R package's tri-state). ``peer.identity`` carries the authenticated user.
"""


@dataclass
class Effects:
    """What the transport must do after a hub call, in this order.

    ``writes`` must be durable before any message in ``send`` leaves (a reply
    carrying heads acknowledges the changes behind them).
    """

    send: list[tuple[ConnectionId, Message]] = field(default_factory=list)
    close: list[tuple[ConnectionId, int, str]] = field(default_factory=list)
    writes: list[tuple[DocumentId, bytes]] = field(default_factory=list)
    load: list[DocumentId] = field(default_factory=list)
    #: ``(live, newcomer)``: a newcomer joined with the peer id of a live
    #: connection. Ping ``live`` and report with :meth:`Hub.probe_result`.
    probe: list[tuple[ConnectionId, ConnectionId]] = field(default_factory=list)
    #: Documents just asked of upstream servers: call :meth:`Hub.upstream_timeout`
    #: for each after a while, so peers are not kept waiting by a silent upstream.
    asked: list[DocumentId] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.send or self.close or self.writes or self.load or self.probe or self.asked)


@dataclass(frozen=True)
class DocumentInfo:
    """A summary of one document, as :meth:`Hub.list_documents` reports it."""

    document_id: DocumentId
    loaded: bool
    heads: tuple[str, ...]
    peers: int


@dataclass
class _Connection:
    conn_id: ConnectionId
    remote_address: str | None
    identity: dict[str, Any] | None
    peer: PeerInfo | None = None
    parked: deque[Message] = field(default_factory=deque)
    waiting_for: DocumentId | None = None
    # The live connection a newcomer's join waits on (see Effects.probe).
    probing: ConnectionId | None = None
    docs: set[DocumentId] = field(default_factory=set)
    # Engaged documents that hold nothing yet, and bytes of orphan changes.
    dataless: set[DocumentId] = field(default_factory=set)
    orphan_bytes: int = 0
    # The name of the upstream server this connection goes to (we joined it).
    upstream: str | None = None

    def peer_id_text(self) -> str:
        """Who this is, for logs."""
        who = self.peer.peer_id if self.peer is not None else self.remote_address
        return f"peer {printable(who)}"


class Hub:
    """The sans-I/O automerge-repo sync engine of a server.

    Args:
        peer_id: this hub's peer id (random if omitted).
        storage_id: the persistent storage id announced to peers; None for
            an ephemeral hub.
        share: the :data:`SharePolicy`.
        stored: the ids the store holds, for deciding whether an unknown id
            must be loaded (anything with ``in``; the store itself works).
        create_on_request: R-compatible mode: a ``request`` for an unknown
            id creates an empty document instead of ``doc-unavailable``
            (JS clients' ``find()`` then never settles; off by default).
        limits: what one peer may make the hub hold (:class:`HubLimits`).
        upstreams: names (URLs) of the upstream servers the transport will
            connect to (:meth:`open_upstream`): documents that change while
            one of them is not connected are synced with it when it is.
    """

    def __init__(
        self,
        *,
        peer_id: PeerId | None = None,
        storage_id: str | None = None,
        share: SharePolicy = "request",
        stored: Container[DocumentId] = frozenset(),
        create_on_request: bool = False,
        limits: HubLimits | None = None,
        upstreams: Iterable[str] = (),
    ) -> None:
        if not callable(share) and share not in ("announce", "request", "deny"):
            raise ValueError(
                f"share must be 'announce', 'request', 'deny' or a callable, not {share!r}"
            )
        self.peer_id: PeerId = peer_id or generate_peer_id("autosync-server")
        self.storage_id = storage_id
        self.share = share
        self.create_on_request = create_on_request
        self.limits = limits or HubLimits.for_message_size()
        self._stored = stored
        self._next_conn: ConnectionId = 0
        self._conns: dict[ConnectionId, _Connection] = {}
        self._peers: dict[PeerId, ConnectionId] = {}
        self._docs: dict[DocumentId, Doc] = {}
        self._dirty: set[DocumentId] = set()
        # Every document record by last use, oldest first: a use counter,
        # not a clock (the runtime maps it to time).
        self._uses = 0
        self._recent: OrderedDict[DocumentId, int] = OrderedDict()
        self._ephemeral_seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        # Per upstream name: documents changed while it was not connected,
        # and the connection it answered on (the peer message) while it is.
        self._owed: dict[str, set[DocumentId]] = {name: set() for name in upstreams}
        self._upstream_conns: dict[str, ConnectionId] = {}
        self._fx = Effects()

    # -- public API: connections ----------------------------------------------

    def open_connection(
        self, *, remote_address: str | None = None, identity: dict[str, Any] | None = None
    ) -> ConnectionId:
        """Register a new transport connection; the peer must ``join`` first."""
        self._next_conn += 1
        conn = _Connection(self._next_conn, remote_address, identity)
        self._conns[conn.conn_id] = conn
        return conn.conn_id

    def receive(self, conn_id: ConnectionId, data: bytes) -> Effects:
        """Handle one binary WebSocket message from a connection."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return self._take()  # a message racing the close of its connection
        if not data:
            return self._take()  # protocol §1.1: ignore empty frames
        try:
            msg = decode(data)
        except ProtocolError as exc:
            self._fail(conn, str(exc))
            return self._take()
        if conn.parked:
            conn.parked.append(msg)  # keep per-connection order behind a load or probe
        else:
            self._handle(conn, msg)
        return self._take()

    def is_waiting(self, conn_id: ConnectionId) -> bool:
        """Whether a connection's messages wait (for a document load or a probe).

        A transport should stop reading from the connection meanwhile, so
        what waits stays a message or two.
        """
        conn = self._conns.get(conn_id)
        return conn is not None and bool(conn.parked)

    def close_connection(self, conn_id: ConnectionId) -> Effects:
        """Forget a connection that closed or died; safe to call twice."""
        conn = self._conns.pop(conn_id, None)
        if conn is not None:
            self._forget_peer(conn)
            for other in list(self._conns.values()):
                if other.probing == conn_id:
                    self._end_probe(other, live=False)
        return self._take()

    def open_upstream(
        self, name: str, *, remote_address: str | None = None
    ) -> tuple[ConnectionId, Effects]:
        """Register a connection the transport opened to an upstream server; join it.

        The hub speaks first (``join``); once the server answers ``peer`` it
        is a peer that gets every document with changes here, and that is
        asked for documents peers want and nobody here has. ``name`` (its
        URL) identifies the server across reconnects: documents that changed
        while it was away are synced with it when it is back.
        """
        self._owed.setdefault(name, set())
        self._next_conn += 1
        conn = _Connection(self._next_conn, remote_address or name, None, upstream=name)
        self._conns[conn.conn_id] = conn
        self._send(
            conn.conn_id,
            Join(
                sender_id=self.peer_id,
                peer_metadata=PeerMetadata(
                    storage_id=self.storage_id, is_ephemeral=self.storage_id is None
                ),
            ),
        )
        return conn.conn_id, self._take()

    def upstream_joined(self, name: str) -> bool:
        """Whether the upstream server ``name`` answered our join on a live connection."""
        return name in self._upstream_conns

    def upstream_timeout(self, doc_id: DocumentId) -> Effects:
        """Stop waiting for upstream servers' answers about ``doc_id`` (see :attr:`Effects.asked`).

        The peers that asked hear ``doc-unavailable``; should an upstream
        send the document later, it still reaches them.
        """
        doc = self._docs.get(doc_id)
        if doc is not None and doc.asking:
            logger.info(
                "document %s: %s did not answer; its askers hear it is unavailable",
                doc_id,
                counted(len(doc.asking), "upstream server"),
            )
            doc.asking.clear()
            self._settle_asking(doc)
        return self._take()

    def probe_result(self, conn_id: ConnectionId, live: bool) -> Effects:
        """Report on an :attr:`Effects.probe`: did the connection holding the peer id answer?

        ``conn_id`` is the newcomer. If the holder answered, the newcomer is
        refused ("peer id in use"); if not, the holder is closed and the
        newcomer's join goes ahead (a client reconnecting after a dropped
        socket).
        """
        conn = self._conns.get(conn_id)
        if conn is not None and conn.probing is not None:
            self._end_probe(conn, live=live)
        return self._take()

    def document_loaded(
        self,
        doc_id: DocumentId,
        document: am.Document | None,
        *,
        waiting: dict[bytes, bytes] | None = None,
        problem: str | None = None,
    ) -> Effects:
        """Give the hub the document the store holds for ``doc_id`` (None: nothing).

        ``document`` is what the stored bytes load to (the runtime salvages
        them off the event loop, see :mod:`autosync_jupyter.storage.salvage`);
        ``waiting`` are stored changes whose dependencies are missing, by
        hash: they are applied when a peer brings what they lack. Stored
        bytes that load to nothing at all are :meth:`document_load_failed`.

        ``problem`` says why the store has nothing although it listed the
        document (its bytes were damaged and set aside): the document is then
        missing as for a new id, so a peer with a copy restores it, and
        :meth:`problem` reports the reason until one does.
        """
        doc = self._docs.get(doc_id)
        if doc is None or doc.state is not DocState.LOADING:
            return self._take()
        doc.finish_load(document, waiting=waiting, problem=problem)
        self._used(doc)
        return self._after_load(doc)

    def document_load_failed(self, doc_id: DocumentId, reason: str) -> Effects:
        """The store could not read ``doc_id``: it stays unavailable (nothing is written to it).

        Peers asking for it are told it is unavailable; :meth:`problem`
        gives ``reason``. Until the process restarts the files are left as
        they are, so nothing a later read could recover is overwritten.
        """
        doc = self._docs.get(doc_id)
        if doc is None or doc.state is not DocState.LOADING:
            return self._take()
        doc.fail_load(reason)
        return self._after_load(doc)

    def _after_load(self, doc: Doc) -> Effects:
        for conn in list(self._conns.values()):
            if conn.waiting_for == doc.doc_id:
                conn.waiting_for = None
                self._drain_parked(conn)
        if doc.state is DocState.READY:
            self._announce_to_all(doc)
            if doc.peers:
                self._dirty.add(doc.doc_id)  # a reload: answer the peers that stayed
        return self._take()

    def stored_changes_arrived(self, doc_id: DocumentId, data: bytes) -> Effects:
        """Take changes that another server process stored for a loaded document.

        ``data`` is what the store read (change chunks, and saved documents
        when the other process compacted): it is already durable, so
        nothing is written. Each change the document lacks is checked
        against it (:mod:`~autosync_jupyter.crdt.guard`) and applied in
        dependency order, as stored changes waiting for dependencies are;
        those whose dependencies have not arrived yet wait with them. The
        document's peers are then synced. A document that is not in memory
        (loading, unloaded) is left alone: its next load reads everything. A
        document peers asked for that nobody had (:meth:`is_missing`) comes
        into being from ``data`` (give it everything the store holds).
        """
        doc = self._docs.get(doc_id)
        if doc is None or not data:
            return self._take()
        if doc.state is DocState.MISSING:
            doc.arrive(am.Document())
            fx = self.stored_changes_arrived(doc_id, data)
            if not doc.heads() and doc.can(DocEvent.ABANDON):
                doc.abandon()  # nothing in it could be applied
            return fx
        if doc.state is not DocState.READY or doc.doc is None:
            return self._take()
        if doc.guard is None:
            doc.guard = DocumentGuard(doc.doc)
        guard = doc.guard
        guard.catch_up()
        for chunk in split_chunks(data):
            if len(chunk) > 8 and chunk[8] == CHUNK_DOCUMENT:
                try:
                    saved = am.Document.load(chunk)
                    changes = [(c.hash, c.bytes) for c in saved.get_changes([])]
                except BaseException as exc:
                    if not is_panic(exc) and not isinstance(exc, Exception):
                        raise
                    logger.error(
                        "document %s: a stored snapshot does not load (%s); skipped",
                        doc_id,
                        printable(exc),
                    )
                    continue
            else:
                try:
                    changes = [(read_change(chunk).hash, chunk)]
                except ChunkRejected as exc:
                    logger.error("document %s: a stored change does not read (%s)", doc_id, exc)
                    continue
            for change_hash, change_bytes in changes:
                if not guard.knows(change_hash):
                    doc.waiting[change_hash] = change_bytes
        before = doc.doc.get_heads()
        self._apply_waiting(doc, stored=True)
        if doc.doc.get_heads() != before:
            self._used(doc)
            self._dirty.add(doc_id)
            if not before:  # the document's first changes: share it
                doc.asking.clear()
                for conn_id in doc.peers:
                    peer = self._conns.get(conn_id)
                    if peer is not None:
                        peer.dataless.discard(doc_id)
                self._announce_to_all(doc)
        return self._take()

    def propagate(
        self, doc_ids: Iterable[DocumentId] | None = None, *, hold: bool = False
    ) -> Effects:
        """Send the sync messages that documents with news owe their peers.

        Receiving a message or changing a document only marks it; this
        generates one message per peer and document that needs one, however
        many changes arrived since. The transport decides how often to call
        it (at least once per loop turn; throttled per document under load).
        Without ``doc_ids``, every marked document is synced.

        ``hold`` (for a busy server): a peer that has not answered the last
        message that brought it news gets the next one when it answers, or
        after :data:`MAX_HELD_ROUNDS` rounds of the document, whichever comes
        first; the document stays marked meanwhile. A peer slower than the
        rounds then gets fewer, fuller messages instead of a backlog, and
        each message saved is an answer the server need not read.
        """
        if doc_ids is None:
            dirty, self._dirty = self._dirty, set()
        else:
            dirty = self._dirty.intersection(doc_ids)
            self._dirty.difference_update(dirty)
        for doc_id in dirty:
            doc = self._docs.get(doc_id)
            if doc is not None and doc.doc is not None:
                for conn_id, pd in list(doc.peers.items()):
                    self._sync_to(doc, conn_id, pd, hold=hold)
        return self._take()

    def pending_propagation(self) -> bool:
        """Tell whether :meth:`propagate` has work."""
        return bool(self._dirty)

    def peer_count(self, doc_id: DocumentId) -> int:
        """How many connected peers are engaged with a document."""
        doc = self._docs.get(doc_id)
        return len(doc.peers) if doc is not None else 0

    def dirty_documents(self) -> frozenset[DocumentId]:
        """The documents :meth:`propagate` would sync."""
        return frozenset(self._dirty)

    # -- public API: documents -------------------------------------------------

    def add_document(self, doc_id: DocumentId, document: am.Document) -> Effects:
        """Add a document made on the server side; announce it per the policy."""
        existing = self._docs.get(doc_id)
        if existing is not None and not existing.can(DocEvent.ADD):  # ready or loading
            raise ValueError(f"document {doc_id} already exists")
        if doc_id in self._stored and existing is None:
            raise ValueError(f"document {doc_id} already exists in storage")
        if existing is None:
            doc = Doc.added(doc_id, document)
        else:
            doc = existing
            doc.add(document)
        self._docs[doc_id] = doc
        doc.asking.clear()
        self._used(doc)
        self._record_changes(doc)
        self._dirty.add(doc_id)  # late arrival: push to peers that asked before
        self._announce_to_all(doc)
        return self._take()

    def change_document(self, doc_id: DocumentId, edit: Callable[[am.Document], object]) -> Effects:
        """Let ``edit`` change a loaded document in place, then store and sync its changes.

        ``edit`` gets the live core document (transports wrap it in a
        :class:`~autosync_jupyter.Document` for users); whatever
        changes it commits are written and sent to the document's peers.
        """
        doc = self._ready(doc_id)
        assert doc.doc is not None
        self._used(doc)
        before = doc.doc.get_heads()
        edit(doc.doc)
        if doc.doc.get_heads() != before:
            self._record_changes(doc)
            if doc.waiting:
                self._apply_waiting(doc)
            self._dirty.add(doc_id)
        return self._take()

    def document(self, doc_id: DocumentId) -> am.Document:
        """Return a copy (fork) of a loaded document, safe to read and change."""
        doc = self._ready(doc_id)
        assert doc.doc is not None
        self._used(doc)
        return doc.doc.fork()

    def save_document(self, doc_id: DocumentId) -> tuple[bytes, list[bytes]]:
        """Return what compaction must store for a document, and the heads it covers.

        A full save, followed by the stored changes that still wait for a
        dependency (they must outlive the files they came from).
        """
        doc = self._ready(doc_id)
        assert doc.doc is not None
        return doc.doc.save() + b"".join(doc.waiting.values()), doc.doc.get_heads()

    def waiting_changes(self, doc_id: DocumentId) -> int:
        """How many stored changes of a document wait for dependencies it lacks."""
        doc = self._docs.get(doc_id)
        return len(doc.waiting) if doc is not None else 0

    def is_loaded(self, doc_id: DocumentId) -> bool:
        """Tell whether a document is in memory."""
        doc = self._docs.get(doc_id)
        return doc is not None and doc.state is DocState.READY

    def is_missing(self, doc_id: DocumentId) -> bool:
        """Whether peers asked for ``doc_id`` and nobody here has it (yet)."""
        doc = self._docs.get(doc_id)
        return doc is not None and doc.state is DocState.MISSING

    def is_broken(self, doc_id: DocumentId) -> bool:
        """Whether a document's stored bytes could not be loaded at all."""
        doc = self._docs.get(doc_id)
        return doc is not None and doc.state is DocState.BROKEN

    def problem(self, doc_id: DocumentId) -> str | None:
        """Why a stored document cannot be read now (None when it can, or is not stored)."""
        doc = self._docs.get(doc_id)
        if doc is None or doc.state in (DocState.READY, DocState.LOADING):
            return None
        return doc.problem

    def load_needed(self, doc_id: DocumentId) -> bool:
        """Tell whether ``doc_id`` is in storage but not in memory yet."""
        doc = self._docs.get(doc_id)
        if doc is None:
            return doc_id in self._stored
        return doc.state is DocState.LOADING

    def request_load(self, doc_id: DocumentId) -> Effects:
        """Ask the transport to load a stored document (no-op if not stored)."""
        if doc_id not in self._docs and doc_id in self._stored:
            self._docs[doc_id] = Doc.to_load(doc_id)
            self._fx.load.append(doc_id)
        return self._take()

    def unloadable(self, doc_id: DocumentId) -> bool:
        """Whether :meth:`unload` would drop ``doc_id`` (see :meth:`.Doc.unloadable`)."""
        doc = self._docs.get(doc_id)
        return (
            doc is not None
            and doc_id not in self._dirty
            and doc.unloadable(detachable=self._quiet_upstreams(doc))
        )

    def unload(self, doc_id: DocumentId) -> Effects:
        """UNLOAD an idle document: drop it from memory; no-op unless :meth:`unloadable`.

        The transport calls it once the store has made every write of the
        document durable and no load or compaction of it runs. Nothing is
        lost: the next request, sync message or API call loads it again
        from the store, with the same heads and waiting changes.
        """
        if self.unloadable(doc_id):
            doc = self._docs.pop(doc_id)
            for conn_id in doc.peers:  # upstream servers in sync with it
                conn = self._conns.get(conn_id)
                if conn is not None:
                    conn.docs.discard(doc_id)
            doc.peers.clear()
            doc.unload()
            self._recent.pop(doc_id, None)
        return self._take()

    @property
    def uses(self) -> int:
        """A counter bumped at every use of a document (see :meth:`idle_documents`)."""
        return self._uses

    def resident_count(self) -> int:
        """How many documents the hub holds records of (loaded, loading, missing or broken)."""
        return len(self._recent)

    def idle_documents(
        self,
        *,
        used_before: int | None = None,
        limit: int | None = None,
        busy: Container[DocumentId] = frozenset(),
    ) -> list[DocumentId]:
        """Documents :meth:`unload` would drop, least recently used first.

        ``used_before``: only those last used before :attr:`uses` had this
        value; ``limit``: at most this many; ``busy``: documents the
        transport still works on (unflushed writes, a compaction).
        """
        found: list[DocumentId] = []
        stale: list[DocumentId] = []
        for doc_id, used in self._recent.items():
            if (used_before is not None and used >= used_before) or (
                limit is not None and len(found) >= limit
            ):
                break
            doc = self._docs.get(doc_id)
            if doc is None:
                stale.append(doc_id)
            elif doc_id not in busy and self.unloadable(doc_id):
                found.append(doc_id)
        for doc_id in stale:
            del self._recent[doc_id]
        return found

    def list_documents(self) -> list[DocumentInfo]:
        """Summaries of the documents in memory."""
        out = []
        for doc in self._docs.values():
            if doc.state is DocState.READY:
                heads = tuple(sorted(encode_heads(doc.heads())))
                out.append(DocumentInfo(doc.doc_id, True, heads, len(doc.peers)))
        return out

    def peers(self) -> list[PeerInfo]:
        """The peers that have joined."""
        return [c.peer for c in self._conns.values() if c.peer is not None]

    def connection_peer(self, conn_id: ConnectionId) -> PeerInfo | None:
        """The peer that joined on a connection, if any."""
        conn = self._conns.get(conn_id)
        return conn.peer if conn else None

    def shutdown(self, reason: str = "server shutting down") -> Effects:
        """Close every connection (1001) and forget all peers."""
        for conn in list(self._conns.values()):
            self._fx.close.append((conn.conn_id, CloseCode.GOING_AWAY, reason))
            self._forget_peer(conn)
        self._conns.clear()
        return self._take()

    def policy_changed(self) -> Effects:
        """Re-evaluate the share policy for every peer and document.

        Peers that lost access get ``doc-unavailable`` and no more updates;
        peers that gained announce get the document.
        """
        for doc in self._docs.values():
            for conn_id in list(doc.peers):
                conn = self._conns[conn_id]
                assert conn.peer is not None
                if self._decide(conn.peer, doc.doc_id) is False:
                    del doc.peers[conn_id]
                    conn.docs.discard(doc.doc_id)
                    self._send(conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc.doc_id))
            if doc.state is DocState.READY:
                self._announce_to_all(doc)
        return self._take()

    # -- message handling ------------------------------------------------------

    def _handle(self, conn: _Connection, msg: Message) -> None:
        if conn.upstream is not None:
            if conn.peer is None:
                self._upstream_answer(conn, msg)
                return
            if isinstance(msg, Join):
                self._fail(conn, "a server does not join its own client")
                return
        elif isinstance(msg, Join):
            self._join(conn, msg)
            return
        if conn.peer is None:
            self._fail(conn, "Expected join message", target=msg.sender_id)
            return
        if msg.sender_id != conn.peer.peer_id:
            if msg.sender_id is None and isinstance(msg, UnknownMessage):
                return  # an unknown kind of message, with nobody to answer
            if isinstance(msg, Ephemeral):
                if self._may_relay(conn, msg.sender_id):
                    self._ephemeral(conn, msg)
                # Else it is a JS repo's echo of what we relayed to it (its
                # DocSynchronizer re-sends every ephemeral to its other
                # peers): dropped like a duplicate. Closing the link for it
                # cut every browser off at the first presence message.
                return
            # A peer speaks only for itself; relayed ephemerals are re-sent
            # by the hub, never by peers in another's name.
            self._fail(
                conn,
                f"senderId {msg.sender_id!r} is not the peer id this connection joined with",
                code=CloseCode.POLICY_VIOLATION,
            )
            return
        if isinstance(msg, (Request, Sync)):
            if msg.target_id == self.peer_id:
                self._sync_message(conn, msg)
        elif isinstance(msg, Ephemeral):
            self._ephemeral(conn, msg)
        elif isinstance(msg, DocUnavailable):
            self._doc_unavailable(conn, msg)
        elif isinstance(msg, Error):
            logger.info(
                "peer %s reported an error: %s",
                printable(conn.peer.peer_id),
                printable(msg.message),
            )
        elif isinstance(msg, (Leave, RemoteSubscriptionChange, RemoteHeadsChanged)):
            pass  # advisory / remote-heads gossip is off (protocol §3.10)
        elif isinstance(msg, UnknownMessage):
            logger.debug(
                "peer %s: ignoring unknown message type %s",
                printable(conn.peer.peer_id),
                printable(msg.type),
            )
        elif isinstance(msg, Peer):
            logger.debug(
                "peer %s sent a 'peer' message to a server: ignored", printable(conn.peer.peer_id)
            )

    def _join(self, conn: _Connection, msg: Join) -> None:
        versions = msg.supported_protocol_versions
        if versions is not None and PROTOCOL_VERSION not in versions:
            self._fail(conn, "unsupported protocol version", target=msg.sender_id)
            return
        if conn.peer is not None:
            self._forget_peer(conn)  # a second join on one socket resets it
        holder_id = self._peers.get(msg.sender_id)
        holder = self._conns.get(holder_id) if holder_id is not None else None
        if holder is not None and holder is not conn:
            if _identity_key(holder.identity) != _identity_key(conn.identity):
                # Authenticated as someone else: never theirs to take.
                self._fail(
                    conn, "peer id in use", target=msg.sender_id, code=CloseCode.POLICY_VIOLATION
                )
                return
            if conn.identity is None:
                # Anonymous: the holder keeps its id if it is alive. The
                # join waits (parked) until the transport has pinged it.
                conn.probing = holder.conn_id
                conn.parked.appendleft(msg)
                self._fx.probe.append((holder.conn_id, conn.conn_id))
                return
            self._replace(holder)
        conn.peer = _peer_info(conn, msg.sender_id, msg.peer_metadata)
        self._peers[msg.sender_id] = conn.conn_id
        self._send(
            conn.conn_id,
            Peer(
                sender_id=self.peer_id,
                target_id=msg.sender_id,
                selected_protocol_version=PROTOCOL_VERSION,
                peer_metadata=PeerMetadata(
                    storage_id=self.storage_id, is_ephemeral=self.storage_id is None
                ),
            ),
        )
        self._announce_to_peer(conn)

    def _replace(self, holder: _Connection) -> None:
        """Close a connection whose peer id a reconnecting client takes back."""
        assert holder.peer is not None
        logger.info(
            "peer %s reconnected: closing its old connection", printable(holder.peer.peer_id)
        )
        self._fx.close.append(
            (holder.conn_id, CloseCode.NORMAL_CLOSURE, "replaced by a newer connection")
        )
        del self._conns[holder.conn_id]
        self._forget_peer(holder)

    def _end_probe(self, conn: _Connection, *, live: bool) -> None:
        holder = self._conns.get(conn.probing) if conn.probing is not None else None
        conn.probing = None
        if holder is not None and live:
            join = conn.parked.popleft()
            conn.parked.clear()
            self._fail(
                conn, "peer id in use", target=join.sender_id, code=CloseCode.POLICY_VIOLATION
            )
            return
        if holder is not None:
            self._replace(holder)
        self._drain_parked(conn)

    def _sync_message(self, conn: _Connection, msg: Request | Sync) -> None:
        assert conn.peer is not None
        doc_id = msg.document_id
        decision = self._decide(conn.peer, doc_id)
        if decision is False:
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))
            return
        try:
            parsed = read_sync_message(msg.data)
        except SyncMessageRejected as exc:
            self._fail(conn, f"invalid sync message for {doc_id}: {exc}")
            return
        doc = self._docs.get(doc_id)
        if doc is None:
            if doc_id in self._stored:
                doc = self._docs[doc_id] = Doc.to_load(doc_id)
                self._fx.load.append(doc_id)
            else:
                doc = self._docs[doc_id] = Doc.not_found(doc_id)
        if doc.state is DocState.LOADING:
            conn.parked.appendleft(msg)
            conn.waiting_for = doc_id
            return
        self._used(doc)
        pd = doc.peers.get(conn.conn_id)
        first_contact = pd is None
        if pd is None:
            pd = doc.peers[conn.conn_id] = PeerDoc()
            conn.docs.add(doc_id)
        pd.interacted = True
        brings_data = bool(parsed.heads)
        if isinstance(msg, Request):
            pd.requested()
        if brings_data:
            pd.brought_data()

        if doc.state is DocState.BROKEN:
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))
            return
        if conn.conn_id in doc.asking and not brings_data and not doc.has_data():
            # An upstream answering our request with nothing (some servers
            # send an empty document rather than doc-unavailable).
            doc.asking.discard(conn.conn_id)
            pd.said_unavailable()
            if not doc.asking:
                self._settle_asking(doc)
            return
        created = doc.doc is None
        if doc.doc is None:
            if brings_data:
                doc.arrive(am.Document())
            elif self.create_on_request:
                empty = am.Document()
                doc.arrive(empty)
                self._fx.writes.append((doc_id, empty.save()))
                logger.info("document %s created empty on request (R mode)", doc_id)
            elif self._ask_upstreams(conn, doc):
                self._count_dataless(conn, doc)  # answered when the upstreams have
                return
            else:
                self._unavailable(conn, doc_id, pd, again=isinstance(msg, Request))
                self._count_dataless(conn, doc)
                return
        elif not doc.heads() and not brings_data and not self.create_on_request:
            # Announced by a peer whose changes have not arrived yet.
            self._unavailable(conn, doc_id, pd, again=isinstance(msg, Request))
            self._count_dataless(conn, doc)
            return

        if pd.owes_reply and _silences_reply(parsed, doc):
            # A message with no changes that advertises exactly our heads
            # makes the core believe the peer knows our heads, and it would
            # never answer the message before it: the peer would wait
            # forever. The document's next round answers it, with news if
            # there is any by then (one message, not two), else with the
            # acknowledgement the core would have sent.
            pd.owes_ack = True
        if not self._apply_sync(conn, doc, pd, msg.data, parsed, created=created):
            return
        if doc.doc is None:
            return  # rolled back: the peers are answered once it is reloaded
        if not doc.saved_heads:
            self._count_dataless(conn, doc)  # announced, its changes not here yet
            if conn.conn_id not in self._conns:
                return
        elif created:
            logger.info("document %s created by peer %s", doc_id, printable(conn.peer.peer_id))
        pd.owes_reply = True
        if first_contact:
            # A peer opening a document (a fetch) is answered at once, not
            # with the next round of a busy document.
            self._sync_to(doc, conn.conn_id, pd)
        # The reply is generated with the other peers' messages: a burst of
        # messages for one document then costs one reply per peer.
        self._dirty.add(doc_id)

    def _apply_sync(
        self,
        conn: _Connection,
        doc: Doc,
        pd: PeerDoc,
        data: bytes,
        parsed: SyncMessage,
        *,
        created: bool,
    ) -> bool:
        """Check a peer's sync message, give it to the core, store what it added.

        Returns whether the connection lives on.
        """
        assert doc.doc is not None
        admission = Admission()
        if parsed.changes:
            if doc.guard is None:
                doc.guard = DocumentGuard(doc.doc)
            try:
                admission = admit(doc.guard, parsed, self.limits.message)
            except Rejected as exc:
                if created and not doc.has_data():
                    doc.abandon()
                code = CloseCode.MESSAGE_TOO_BIG if exc.too_big else CloseCode.PROTOCOL_ERROR
                self._fail(conn, f"refused changes for {doc.doc_id}: {exc}", code=code)
                return False
        before = doc.saved_heads
        heads_before = doc.doc.get_heads()
        try:
            doc.doc.receive_sync_message(pd.sync_state, am.Message.decode(data))
        except BaseException as exc:
            if not is_panic(exc) and not isinstance(exc, Exception):
                raise
            if is_panic(exc) or admission.orphans or doc.doc.get_heads() != before:
                # Poisoned, or holding what this peer sent: back to what was stored.
                self._rollback(doc, f"the core failed on a message of {conn.peer_id_text()}")
            elif created:
                doc.abandon()  # nothing came of it
            self._fail(conn, f"invalid sync message for {doc.doc_id}: {printable(exc)}")
            return False
        pd.heard(parsed, heads_before)
        heads = doc.doc.get_heads()
        if heads != before:
            guard = doc.guard
            if (
                not doc.orphans
                and guard is not None
                and guard.heads == before
                and admission.applied_alone(before, heads)
            ):
                # The usual message: checked changes, all applied. What the
                # core would be asked for is known already.
                guard.record_admitted(admission, heads)
                self._record_changes(doc, new=[admission.chunks[h] for h in admission.accepted])
            else:
                owners = {h: owner for h, (owner, _) in doc.orphans.items()}
                failure = self._verify(doc, before, admission)
                if failure is not None:
                    self._rollback(doc, failure.reason)
                    # The change's author is cut off; a peer whose message only
                    # completed it is not at fault, and resyncs after the reload.
                    culprit = self._conns.get(owners.get(failure.change_hash, conn.conn_id))
                    if culprit is not None:
                        self._fail(culprit, f"refused changes for {doc.doc_id}: {failure.reason}")
                    return conn.conn_id in self._conns
                self._record_changes(doc)
            if doc.waiting:
                self._apply_waiting(doc)
            if not before:  # the document's first changes: share it
                doc.asking.clear()
                for conn_id in doc.peers:
                    peer = self._conns.get(conn_id)
                    if peer is not None:
                        peer.dataless.discard(doc.doc_id)
                self._announce_to_all(doc)
        return self._hold_orphans(conn, doc, admission)

    def _verify(self, doc: Doc, before: list[bytes], admission: Admission) -> Failure | None:
        """Check what the core applied that could not be checked before it did."""
        assert doc.doc is not None
        changes = doc.doc.get_changes(before)
        known = {h: info for h, (_, info) in doc.orphans.items()}
        for change in changes:
            self._release_orphan(doc, change.hash)
        if not before and admission.documents:
            # A whole document into an empty one: the core checked that it
            # loads; a save must load too. Its guard is built when next needed.
            doc.guard = None
            try:
                am.Document.load(doc.doc.save())
            except BaseException as exc:
                if not is_panic(exc) and not isinstance(exc, Exception):
                    raise
                return Failure(
                    f"the document sent does not load once saved ({printable(exc)})", b""
                )
            return None
        assert doc.guard is not None
        return verify_applied(doc.guard, changes, admission, known)

    def _apply_waiting(self, doc: Doc, *, stored: bool = False) -> None:
        """Apply stored changes whose missing dependencies have arrived (checked first).

        ``stored``: everything applied is known to be in the store (it came
        from there just now), so nothing is written again.
        """
        assert doc.doc is not None
        if doc.guard is None:
            doc.guard = DocumentGuard(doc.doc)
        guard = doc.guard
        pending = Pending()
        progress = True
        while progress:
            progress = False
            for change_hash, chunk in list(doc.waiting.items()):
                if change_hash in pending.infos:
                    continue  # taken in an earlier pass
                if guard.knows(change_hash):
                    del doc.waiting[change_hash]
                    continue
                try:
                    info = read_change(chunk)
                except ChunkRejected as exc:
                    reason: str | None = str(exc)
                else:
                    if not guard.ready(info, pending):
                        continue
                    reason = guard.check(info, pending)
                if reason:
                    logger.error(
                        "document %s: stored change %s does not check (%s); dropped",
                        doc.doc_id,
                        encode_heads([change_hash])[0],
                        reason,
                    )
                    del doc.waiting[change_hash]
                    continue
                pending.add(info)
                progress = True
        if not pending.infos:
            return
        chunks = [doc.waiting.pop(h) for h in pending.infos]
        before = doc.doc.get_heads()
        doc.doc.receive_sync_message(am.SyncState(), am.Message.decode(sync_message_of(chunks)))
        changes = doc.doc.get_changes(before)
        verify_applied(guard, changes, Admission(accepted=pending.infos), {})
        self._record_changes(doc, write=not stored)
        if stored:
            logger.debug(
                "document %s: %s stored by another server applied; %d wait",
                doc.doc_id,
                counted(len(changes), "change"),
                len(doc.waiting),
            )
            return
        logger.info(
            "document %s: %s applied now that what they waited for came; %d still wait",
            doc.doc_id,
            counted(len(changes), "stored change"),
            len(doc.waiting),
        )

    def _hold_orphans(self, conn: _Connection, doc: Doc, admission: Admission) -> bool:
        """Account for changes the core keeps until their dependencies arrive."""
        if not admission.orphans:
            return True
        guard = doc.guard
        for change_hash, info in admission.orphans.items():
            if change_hash in doc.orphans or (guard is not None and guard.knows(change_hash)):
                continue
            doc.orphans[change_hash] = (conn.conn_id, info)
            conn.orphan_bytes += info.size
        if conn.orphan_bytes > self.limits.orphan_bytes:
            self._rollback(doc, f"{conn.peer_id_text()} sent too many changes it never completed")
            self._fail(
                conn,
                f"more than {self.limits.orphan_bytes} bytes of changes whose dependencies "
                "never arrived",
                code=CloseCode.MESSAGE_TOO_BIG,
            )
            return False
        return True

    def _release_orphan(self, doc: Doc, change_hash: bytes) -> None:
        held = doc.orphans.pop(change_hash, None)
        if held is not None:
            owner = self._conns.get(held[0])
            if owner is not None:
                owner.orphan_bytes -= held[1].size

    def _rollback(self, doc: Doc, reason: str) -> None:
        """Drop a document from memory and reload it from storage.

        Everything acknowledged is in the store, so nothing is lost: what
        goes is what the core was given but not stored (the change that
        failed, changes still waiting for their dependencies). Its peers
        start their sync over with fresh states.
        """
        logger.warning("document %s: %s; reloading it from storage", doc.doc_id, reason)
        for change_hash in list(doc.orphans):
            self._release_orphan(doc, change_hash)
        if doc.roll_back(self._stored):
            self._fx.load.append(doc.doc_id)

    def _count_dataless(self, conn: _Connection, doc: Doc) -> None:
        """Count an engaged document that holds nothing; refuse a peer beyond the limit."""
        if conn.conn_id not in doc.peers or conn.conn_id not in self._conns:
            return
        conn.dataless.add(doc.doc_id)
        limit = self.limits.documents_without_data
        if len(conn.dataless) > limit:
            self._fail(
                conn,
                f"more than {limit} open documents that nobody has sent",
                code=CloseCode.POLICY_VIOLATION,
            )

    def _unavailable(
        self, conn: _Connection, doc_id: DocumentId, pd: PeerDoc, *, again: bool
    ) -> None:
        # Nobody here has it. The peer stays registered: if the document
        # arrives later it is pushed to it (late arrival). A request is
        # always answered; other messages once.
        assert conn.peer is not None
        if pd.tell_unavailable(again=again):
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))

    def _ephemeral(self, conn: _Connection, msg: Ephemeral) -> None:
        assert conn.peer is not None
        doc = self._docs.get(msg.document_id)
        if doc is None or doc.state is not DocState.READY:
            return  # never create or load a document for an ephemeral message
        if self._decide(conn.peer, msg.document_id) is False:
            return
        key = (msg.sender_id, msg.session_id)
        last = self._ephemeral_seen.get(key)
        if last is not None and msg.count <= last:
            return
        self._ephemeral_seen[key] = msg.count
        self._ephemeral_seen.move_to_end(key)
        if len(self._ephemeral_seen) > _MAX_EPHEMERAL_SESSIONS:
            self._ephemeral_seen.popitem(last=False)
        # A presence-only peer is engaged too, so relays reach it.
        if conn.conn_id not in doc.peers:
            doc.peers[conn.conn_id] = PeerDoc(interacted=True)
            conn.docs.add(doc.doc_id)
        targets: Iterable[ConnectionId] = doc.peers
        direct = self._peers.get(msg.target_id)
        if msg.target_id != self.peer_id and direct is not None:
            targets = [direct]  # addressed to one peer (R behaviour)
        for conn_id in list(targets):
            target = self._conns.get(conn_id)
            if conn_id == conn.conn_id or target is None or target.peer is None:
                continue
            if target.peer.peer_id == msg.sender_id:
                continue
            if self._may_receive(target.peer, doc, doc.peers.get(conn_id)):
                self._send(
                    conn_id,
                    Ephemeral(
                        sender_id=msg.sender_id,
                        target_id=target.peer.peer_id,
                        document_id=msg.document_id,
                        session_id=msg.session_id,
                        count=msg.count,
                        data=msg.data,
                        extra=msg.extra,
                    ),
                )

    def _doc_unavailable(self, conn: _Connection, msg: DocUnavailable) -> None:
        doc = self._docs.get(msg.document_id)
        pd = doc.peers.get(conn.conn_id) if doc else None
        if pd is not None:
            pd.said_unavailable()
        if doc is not None and conn.conn_id in doc.asking:
            doc.asking.discard(conn.conn_id)
            if not doc.asking:
                self._settle_asking(doc)

    # -- upstream servers ----------------------------------------------------------

    def _upstream_answer(self, conn: _Connection, msg: Message) -> None:
        """The first message of an upstream server: ``peer`` (we are in) or a refusal."""
        assert conn.upstream is not None
        if isinstance(msg, Error):
            logger.warning(
                "upstream %s refused us: %s", printable(conn.upstream), printable(msg.message)
            )
            self._fx.close.append((conn.conn_id, CloseCode.NORMAL_CLOSURE, "refused"))
            del self._conns[conn.conn_id]
            self._forget_peer(conn)
            return
        if not isinstance(msg, Peer):
            self._fail(conn, f"expected a peer message, got {printable(msg.type)}")
            return
        if msg.selected_protocol_version != PROTOCOL_VERSION:
            self._fail(
                conn, f"unsupported protocol version {printable(msg.selected_protocol_version)}"
            )
            return
        if msg.sender_id == self.peer_id:
            self._fail(conn, "the upstream server is this server")
            return
        conn.peer = _peer_info(conn, msg.sender_id, msg.peer_metadata, upstream=True)
        self._peers.setdefault(msg.sender_id, conn.conn_id)
        previous = self._upstream_conns.get(conn.upstream)
        if previous is not None and previous in self._conns:
            self._fail(self._conns[previous], "replaced by a newer upstream connection")
        self._upstream_conns[conn.upstream] = conn.conn_id
        logger.info(
            "joined upstream %s (peer %s)", printable(conn.upstream), printable(msg.sender_id)
        )
        # Everything in memory with changes is synced with it; what changed
        # while it was away is loaded to be; what peers wait for is asked.
        for doc in list(self._docs.values()):
            if doc.state is DocState.READY:
                self._engage_and_sync(doc, conn)
            elif doc.state is DocState.MISSING and any(
                cid != conn.conn_id and not self._is_upstream(cid) for cid in doc.peers
            ):
                self._ask_upstreams(None, doc)
        owed = self._owed.setdefault(conn.upstream, set())
        for doc_id in owed:
            if doc_id not in self._docs and doc_id in self._stored:
                self._docs[doc_id] = Doc.to_load(doc_id)
                self._fx.load.append(doc_id)
        owed.clear()

    def _may_relay(self, conn: _Connection, sender: PeerId) -> bool:
        """Whether ``conn`` may pass on an ephemeral message in ``sender``'s name.

        Servers and repos relay their other peers' presence in those peers'
        names (this hub does so to its upstreams): an upstream, or a peer
        with durable storage (a repo, a hub of ours), may; a plain client
        may not. Nobody may speak as a peer connected here, nor as this hub.
        """
        assert conn.peer is not None
        if sender in self._peers or sender == self.peer_id:
            return False
        return conn.upstream is not None or not conn.peer.is_ephemeral

    def _is_upstream(self, conn_id: ConnectionId) -> bool:
        conn = self._conns.get(conn_id)
        return conn is not None and conn.upstream is not None

    def _ask_upstreams(self, asker: _Connection | None, doc: Doc) -> bool:
        """Ask the joined upstream servers for a document nobody here has.

        Returns whether an answer is awaited (then the asking peers are told
        ``doc-unavailable`` only once every upstream said so, or timed out).
        """
        asked_now = False
        for conn_id in self._upstream_conns.values():
            up = self._conns.get(conn_id)
            if up is None or up is asker or up.peer is None:
                continue
            asker_id = asker.peer.peer_id if asker is not None and asker.peer is not None else None
            if asker_id == up.peer.peer_id:
                continue  # a server asking us, its upstream, what it asked us for
            if conn_id in doc.asking:
                continue
            pd = doc.peers.get(conn_id)
            if pd is None:
                pd = doc.peers[conn_id] = PeerDoc()
                up.docs.add(doc.doc_id)
            pd.interacted = True
            request = am.Document().generate_sync_message(pd.sync_state)
            assert request is not None  # a first message always goes out
            pd.generated([])
            data = request.encode()
            self._send(conn_id, Request(self.peer_id, up.peer.peer_id, doc.doc_id, data))
            doc.asking.add(conn_id)
            asked_now = True
        if asked_now:
            self._fx.asked.append(doc.doc_id)
        return bool(doc.asking)

    def _settle_asking(self, doc: Doc) -> None:
        """No upstream has the document: answer the peers that asked for it."""
        if doc.has_data():
            return
        for conn_id, pd in list(doc.peers.items()):
            conn = self._conns.get(conn_id)
            if conn is None or conn.peer is None or conn.upstream is not None:
                continue
            if pd.status is not PeerStatus.UNAVAILABLE and pd.tell_unavailable(again=True):
                self._send(conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc.doc_id))

    def _quiet_upstreams(self, doc: Doc) -> set[ConnectionId]:
        """Upstream servers that have everything of ``doc``: they need not keep it in memory."""
        return {
            conn_id
            for conn_id, pd in doc.peers.items()
            if self._is_upstream(conn_id) and not pd.owes_reply and pd.quiet_version == doc.version
        }

    # -- helpers ---------------------------------------------------------------

    def _used(self, doc: Doc) -> None:
        # Any state: a missing document becomes READY when changes arrive.
        self._uses += 1
        self._recent[doc.doc_id] = self._uses
        self._recent.move_to_end(doc.doc_id)

    def _drain_parked(self, conn: _Connection) -> None:
        while (
            conn.parked
            and conn.waiting_for is None
            and conn.probing is None
            and conn.conn_id in self._conns
        ):
            self._handle(conn, conn.parked.popleft())

    def _record_changes(
        self, doc: Doc, *, write: bool = True, new: list[bytes] | None = None
    ) -> None:
        """Store what the document holds beyond its saved heads, and move them.

        ``new``: those changes' bytes, when known (the guard has them
        already); otherwise the document is asked.
        """
        assert doc.doc is not None
        if new is not None:
            if write and new:
                self._fx.writes.append((doc.doc_id, b"".join(new)))
        else:
            changes = doc.doc.get_changes(doc.saved_heads)
            if changes:
                if write:
                    self._fx.writes.append((doc.doc_id, b"".join(c.bytes for c in changes)))
                if doc.guard is not None:
                    doc.guard.record(changes, {})  # a no-op for changes checked on arrival
        doc.saved_heads = doc.doc.get_heads()
        doc.version += 1
        for name, owed in self._owed.items():
            if name not in self._upstream_conns:
                owed.add(doc.doc_id)

    def _sync_to(self, doc: Doc, conn_id: ConnectionId, pd: PeerDoc, *, hold: bool = False) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.peer is None or doc.doc is None:
            return
        if not pd.owes_reply and pd.synced_version == doc.version:
            return
        if not self._may_receive(conn.peer, doc, pd):
            return
        if hold and pd.unanswered and pd.held < MAX_HELD_ROUNDS:
            pd.held += 1
            self._dirty.add(doc.doc_id)  # its answer, or a later round, sends it
            return
        pd.owes_reply = False
        pd.synced_version = doc.version
        heads = doc.doc.get_heads()
        if pd.surely_silent(heads, doc.guard):
            pd.quiet_version = doc.version
            self._acknowledge(doc, conn, pd, heads)
            return
        try:
            message = doc.doc.generate_sync_message(pd.sync_state)
        except BaseException as exc:
            if not is_panic(exc) and not isinstance(exc, Exception):
                raise
            # The peer's sync state (what it said it has) broke the core.
            self._rollback(doc, f"generating a sync message failed: {printable(exc)}")
            self._fail(conn, f"sync with {doc.doc_id} failed")
            return
        if message is not None:
            data = message.encode()
            pd.generated(heads, data[0])
            pd.quiet_version = -1
            self._send(conn_id, Sync(self.peer_id, conn.peer.peer_id, doc.doc_id, data))
        else:
            pd.quiet_version = doc.version  # nothing more to say: in sync
            self._acknowledge(doc, conn, pd, heads)

    def _acknowledge(self, doc: Doc, conn: _Connection, pd: PeerDoc, heads: list[bytes]) -> None:
        """Send the acknowledgement the peer is owed, if any (the core has nothing for it)."""
        data = pd.take_acknowledgement(heads)
        if data is not None and conn.peer is not None:
            self._send(conn.conn_id, Sync(self.peer_id, conn.peer.peer_id, doc.doc_id, data))

    def _may_receive(self, peer: PeerInfo, doc: Doc, pd: PeerDoc | None) -> bool:
        decision = self._decide(peer, doc.doc_id)
        if decision is False:
            return False
        return decision is True or (pd is not None and pd.interacted)

    def _announce_to_peer(self, conn: _Connection) -> None:
        assert conn.peer is not None
        if self.share == "request" or self.share == "deny":
            return
        for doc in list(self._docs.values()):
            if doc.state is DocState.READY and self._decide(conn.peer, doc.doc_id) is True:
                self._engage_and_sync(doc, conn)
        # Stored documents not in memory yet are announced once loaded.
        for doc_id in self._stored_ids():
            if doc_id not in self._docs and self._decide(conn.peer, doc_id) is True:
                self._docs[doc_id] = Doc.to_load(doc_id)
                self._fx.load.append(doc_id)

    def _announce_to_all(self, doc: Doc) -> None:
        if not doc.heads():
            return
        if self.share == "request" or self.share == "deny":
            # Clients get it on request only; upstream servers get everything.
            conns = [self._conns[c] for c in self._upstream_conns.values() if c in self._conns]
        else:
            conns = list(self._conns.values())
        for conn in conns:
            if conn.peer is not None and self._decide(conn.peer, doc.doc_id) is True:
                self._engage_and_sync(doc, conn)

    def _engage_and_sync(self, doc: Doc, conn: _Connection) -> None:
        if not doc.heads():
            return
        pd = doc.peers.get(conn.conn_id)
        if pd is None:
            pd = doc.peers[conn.conn_id] = PeerDoc()
            conn.docs.add(doc.doc_id)
            self._sync_to(doc, conn.conn_id, pd)

    def _stored_ids(self) -> Iterator[DocumentId]:
        ids = getattr(self._stored, "document_ids", None)
        if callable(ids):
            yield from ids()
        elif isinstance(self._stored, Iterable):
            yield from self._stored

    def _decide(self, peer: PeerInfo, doc_id: DocumentId) -> ShareDecision:
        if peer.upstream:
            return True  # the operator chose to sync with it: everything
        share = self.share
        if share == "request":
            return None
        if share == "announce":
            return True
        if share == "deny":
            return False
        assert callable(share)
        try:
            decision = share(peer, doc_id)
        except Exception:
            logger.exception("share policy failed for peer %s, document %s", peer.peer_id, doc_id)
            return False  # fail closed
        if decision not in (True, False, None):
            logger.error("share policy returned %r (not True/False/None): denying", decision)
            return False
        return decision

    def _ready(self, doc_id: DocumentId) -> Doc:
        doc = self._docs.get(doc_id)
        if doc is None or doc.state is not DocState.READY:
            raise KeyError(doc_id)
        return doc

    def _forget_peer(self, conn: _Connection) -> None:
        for doc_id in conn.docs:
            doc = self._docs.get(doc_id)
            if doc is None:
                continue
            doc.peers.pop(conn.conn_id, None)
            if conn.conn_id in doc.asking:
                doc.asking.discard(conn.conn_id)
                if not doc.asking:
                    self._settle_asking(doc)
            self._used(doc)  # idle from now on, if it was its last peer
            if any(owner == conn.conn_id for owner, _ in doc.orphans.values()):
                # The changes it left waiting for dependencies go with it.
                self._rollback(doc, f"{conn.peer_id_text()} left changes it never completed")
            if doc.forgettable(self._stored):
                del self._docs[doc_id]  # nothing here but what it asked for
                self._recent.pop(doc_id, None)
                self._dirty.discard(doc_id)
        conn.docs.clear()
        conn.dataless.clear()
        conn.parked.clear()
        conn.waiting_for = None
        conn.probing = None
        if conn.upstream is not None and self._upstream_conns.get(conn.upstream) == conn.conn_id:
            del self._upstream_conns[conn.upstream]
        if conn.peer is not None:
            if self._peers.get(conn.peer.peer_id) == conn.conn_id:
                del self._peers[conn.peer.peer_id]
            sender = conn.peer.peer_id
            for key in [k for k in self._ephemeral_seen if k[0] == sender]:
                del self._ephemeral_seen[key]
            conn.peer = None

    def _fail(
        self,
        conn: _Connection,
        reason: str,
        target: PeerId | None = None,
        *,
        code: int = CloseCode.PROTOCOL_ERROR,
    ) -> None:
        peer_id = conn.peer.peer_id if conn.peer else target
        logger.warning(
            "closing connection of %s: %s",
            printable(peer_id) if peer_id else conn.remote_address,
            printable(reason, limit=_MAX_ERROR_TEXT),
        )
        self._send(conn.conn_id, Error(self.peer_id, reason[:_MAX_ERROR_TEXT], target_id=peer_id))
        self._fx.close.append((conn.conn_id, code, close_reason(reason)))
        del self._conns[conn.conn_id]
        self._forget_peer(conn)

    def _send(self, conn_id: ConnectionId, msg: Message) -> None:
        self._fx.send.append((conn_id, msg))

    def _take(self) -> Effects:
        fx, self._fx = self._fx, Effects()
        return fx


class HubView:
    """A hub seen only through its queries: what code that must not drive it may use.

    Every method of :class:`Hub` that changes state returns :class:`Effects`
    that the runtime owning the hub must carry out; calling one from the
    outside would drop them. :attr:`SyncServer.hub
    <autosync_jupyter.SyncServer.hub>` therefore hands out this view.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    @property
    def peer_id(self) -> PeerId:
        """The hub's peer id."""
        return self._hub.peer_id

    @property
    def storage_id(self) -> str | None:
        """The storage id announced to peers (None: ephemeral)."""
        return self._hub.storage_id

    def peers(self) -> list[PeerInfo]:
        """The peers that have joined."""
        return self._hub.peers()

    def list_documents(self) -> list[DocumentInfo]:
        """Summaries of the documents in memory."""
        return self._hub.list_documents()

    def peer_count(self, doc_id: DocumentId) -> int:
        """How many peers sync ``doc_id``."""
        return self._hub.peer_count(doc_id)

    def is_loaded(self, doc_id: DocumentId) -> bool:
        """Whether ``doc_id`` is in memory."""
        return self._hub.is_loaded(doc_id)

    def problem(self, doc_id: DocumentId) -> str | None:
        """Why a stored document cannot be read now (None when it can)."""
        return self._hub.problem(doc_id)

    def waiting_changes(self, doc_id: DocumentId) -> int:
        """How many stored changes of ``doc_id`` wait for dependencies it lacks."""
        return self._hub.waiting_changes(doc_id)

    def save_document(self, doc_id: DocumentId) -> tuple[bytes, list[bytes]]:
        """What compaction would store for ``doc_id``, and the heads it covers."""
        return self._hub.save_document(doc_id)


def _peer_info(
    conn: _Connection, peer_id: PeerId, meta: PeerMetadata | None, *, upstream: bool = False
) -> PeerInfo:
    """Who joined on ``conn`` (or answered our join, for an upstream)."""
    meta = meta or PeerMetadata()
    return PeerInfo(
        peer_id=peer_id,
        storage_id=meta.storage_id,
        is_ephemeral=meta.is_ephemeral is not False,
        identity=conn.identity,
        remote_address=conn.remote_address,
        upstream=upstream,
    )


def _silences_reply(message: SyncMessage, doc: Doc) -> bool:
    return not message.has_changes and sorted(message.heads) == sorted(doc.heads())


def _identity_key(identity: dict[str, Any] | None) -> tuple[object, ...] | None:
    """Who an authenticated identity is: issuer and subject (else the email)."""
    if identity is None:
        return None
    return (identity.get("iss"), identity.get("sub") or identity.get("email"))
