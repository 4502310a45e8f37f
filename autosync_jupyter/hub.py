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
  (``_Doc.peers``), so no peer silently stops receiving changes;
* a document is loaded from storage before anything is said about it
  (messages for it are parked until :meth:`Hub.document_loaded`);
* a requester told ``doc-unavailable`` stays registered and is sent the
  document when it arrives later;
* changes from one peer reach the other peers of the document once per
  :meth:`Hub.propagate`, which the transport calls once per loop turn, so a
  burst of changes costs one sync message per peer, not one per change.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeAlias

import automerge.core as am

from .chunks import split_chunks
from .errors import ProtocolError
from .ids import DocumentId, PeerId, generate_peer_id
from .protocol import (
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
    sync_message_has_heads,
    sync_message_heads,
)

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "ConnectionId",
    "DocumentInfo",
    "Effects",
    "Hub",
    "PeerInfo",
    "ShareDecision",
    "SharePolicy",
]

logger = logging.getLogger("autosync_jupyter.hub")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008

ConnectionId: TypeAlias = int

# Ephemeral de-duplication remembers this many (sender, session) pairs; the
# oldest are forgotten first, so a flood of fresh session ids cannot grow it.
_MAX_EPHEMERAL_SESSIONS = 10_000


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
    """

    peer_id: PeerId
    storage_id: str | None = None
    is_ephemeral: bool = True
    identity: dict[str, Any] | None = None
    remote_address: str | None = None

    @property
    def email(self) -> str | None:
        """The authenticated email, if any."""
        value = (self.identity or {}).get("email")
        return value if isinstance(value, str) else None


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

    def __bool__(self) -> bool:
        return bool(self.send or self.close or self.writes or self.load)


@dataclass(frozen=True)
class DocumentInfo:
    """A summary of one document, as :meth:`Hub.list_documents` reports it."""

    document_id: DocumentId
    loaded: bool
    heads: tuple[str, ...]
    peers: int


class _Status(Enum):
    UNKNOWN = "unknown"
    HAS = "has"
    WANTS = "wants"
    UNAVAILABLE = "unavailable"


class _DocState(Enum):
    LOADING = "loading"  # in the store, not in memory yet
    READY = "ready"  # in memory (possibly without changes)
    MISSING = "missing"  # nobody here has it
    BROKEN = "broken"  # stored bytes Automerge cannot load: never written to


@dataclass
class _PeerDoc:
    sync_state: am.SyncState = field(default_factory=am.SyncState)
    status: _Status = _Status.UNKNOWN
    interacted: bool = False
    # Generating a sync message is the costliest call on the hot path; it
    # can only yield something if the document changed since the last call
    # for this peer or the peer has spoken since.
    synced_version: int = -1
    owes_reply: bool = False


@dataclass
class _Doc:
    doc_id: DocumentId
    state: _DocState
    doc: am.Document | None = None
    saved_heads: list[bytes] = field(default_factory=list)
    peers: dict[ConnectionId, _PeerDoc] = field(default_factory=dict)
    version: int = 0  # bumped whenever the heads change

    def heads(self) -> list[bytes]:
        return self.doc.get_heads() if self.doc is not None else []


@dataclass
class _Connection:
    conn_id: ConnectionId
    remote_address: str | None
    identity: dict[str, Any] | None
    peer: PeerInfo | None = None
    parked: deque[Message] = field(default_factory=deque)
    waiting_for: DocumentId | None = None
    docs: set[DocumentId] = field(default_factory=set)


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
    """

    def __init__(
        self,
        *,
        peer_id: PeerId | None = None,
        storage_id: str | None = None,
        share: SharePolicy = "request",
        stored: Container[DocumentId] = frozenset(),
        create_on_request: bool = False,
    ) -> None:
        if not callable(share) and share not in ("announce", "request", "deny"):
            raise ValueError(
                f"share must be 'announce', 'request', 'deny' or a callable, not {share!r}"
            )
        self.peer_id: PeerId = peer_id or generate_peer_id("autosync-server")
        self.storage_id = storage_id
        self.share = share
        self.create_on_request = create_on_request
        self._stored = stored
        self._next_conn: ConnectionId = 0
        self._conns: dict[ConnectionId, _Connection] = {}
        self._peers: dict[PeerId, ConnectionId] = {}
        self._docs: dict[DocumentId, _Doc] = {}
        self._dirty: set[DocumentId] = set()
        self._ephemeral_seen: OrderedDict[tuple[str, str], int] = OrderedDict()
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
            conn.parked.append(msg)  # keep per-connection order behind a load
        else:
            self._handle(conn, msg)
        return self._take()

    def close_connection(self, conn_id: ConnectionId) -> Effects:
        """Forget a connection that closed or died; safe to call twice."""
        conn = self._conns.pop(conn_id, None)
        if conn is not None:
            self._forget_peer(conn)
        return self._take()

    def document_loaded(self, doc_id: DocumentId, data: bytes | None) -> Effects:
        """Give the hub what the store holds for ``doc_id`` (None: nothing)."""
        doc = self._docs.get(doc_id)
        if doc is None or doc.state is not _DocState.LOADING:
            return self._take()
        if data:
            loaded = _load(doc_id, data)
            if loaded is None:
                doc.state = _DocState.BROKEN
            else:
                doc.doc = loaded
                doc.state = _DocState.READY
                doc.saved_heads = loaded.get_heads()
        else:
            doc.state = _DocState.MISSING
        for conn in list(self._conns.values()):
            if conn.waiting_for == doc_id:
                conn.waiting_for = None
                self._drain_parked(conn)
        if doc.state is _DocState.READY:
            self._announce_to_all(doc)
        return self._take()

    def propagate(self, doc_ids: Iterable[DocumentId] | None = None) -> Effects:
        """Send the sync messages that documents with news owe their peers.

        Receiving a message or changing a document only marks it; this
        generates one message per peer and document that needs one, however
        many changes arrived since. The transport decides how often to call
        it (at least once per loop turn; throttled per document under load).
        Without ``doc_ids``, every marked document is synced.
        """
        if doc_ids is None:
            dirty, self._dirty = self._dirty, set()
        else:
            dirty = self._dirty.intersection(doc_ids)
            self._dirty.difference_update(dirty)
        for doc_id in dirty:
            doc = self._docs.get(doc_id)
            if doc is not None and doc.doc is not None:
                for conn_id, pd in doc.peers.items():
                    self._sync_to(doc, conn_id, pd)
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
        if existing is not None and existing.state in (_DocState.READY, _DocState.LOADING):
            raise ValueError(f"document {doc_id} already exists")
        if doc_id in self._stored and existing is None:
            raise ValueError(f"document {doc_id} already exists in storage")
        doc = existing or _Doc(doc_id, _DocState.READY)
        doc.state = _DocState.READY
        doc.doc = document
        self._docs[doc_id] = doc
        self._record_changes(doc)
        self._dirty.add(doc_id)  # late arrival: push to peers that asked before
        self._announce_to_all(doc)
        return self._take()

    def change_document(self, doc_id: DocumentId, edit: Callable[[am.Document], object]) -> Effects:
        """Let ``edit`` change a loaded document in place, then store and sync its changes.

        ``edit`` gets the live core document (transports wrap it in a
        :class:`~autosync_jupyter.document.Document` for users); whatever
        changes it commits are written and sent to the document's peers.
        """
        doc = self._ready(doc_id)
        assert doc.doc is not None
        before = doc.doc.get_heads()
        edit(doc.doc)
        if doc.doc.get_heads() != before:
            self._record_changes(doc)
            self._dirty.add(doc_id)
        return self._take()

    def document(self, doc_id: DocumentId) -> am.Document:
        """Return a copy (fork) of a loaded document, safe to read and change."""
        doc = self._ready(doc_id)
        assert doc.doc is not None
        return doc.doc.fork()

    def save_document(self, doc_id: DocumentId) -> tuple[bytes, list[bytes]]:
        """Return a full save of a loaded document and the heads it covers."""
        doc = self._ready(doc_id)
        assert doc.doc is not None
        return doc.doc.save(), doc.doc.get_heads()

    def is_loaded(self, doc_id: DocumentId) -> bool:
        """Tell whether a document is in memory."""
        doc = self._docs.get(doc_id)
        return doc is not None and doc.state is _DocState.READY

    def load_needed(self, doc_id: DocumentId) -> bool:
        """Tell whether ``doc_id`` is in storage but not in memory yet."""
        doc = self._docs.get(doc_id)
        if doc is None:
            return doc_id in self._stored
        return doc.state is _DocState.LOADING

    def request_load(self, doc_id: DocumentId) -> Effects:
        """Ask the transport to load a stored document (no-op if not stored)."""
        if doc_id not in self._docs and doc_id in self._stored:
            self._docs[doc_id] = _Doc(doc_id, _DocState.LOADING)
            self._fx.load.append(doc_id)
        return self._take()

    def list_documents(self) -> list[DocumentInfo]:
        """Summaries of the documents in memory."""
        out = []
        for doc in self._docs.values():
            if doc.state is _DocState.READY:
                heads = tuple(h.hex() for h in doc.heads())
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
            self._fx.close.append((conn.conn_id, CLOSE_GOING_AWAY, reason))
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
            if doc.state is _DocState.READY:
                self._announce_to_all(doc)
        return self._take()

    # -- message handling ------------------------------------------------------

    def _handle(self, conn: _Connection, msg: Message) -> None:
        if isinstance(msg, Join):
            self._join(conn, msg)
            return
        if conn.peer is None:
            self._fail(conn, "Expected join message", target=msg.sender_id)
            return
        # Ephemerals keep their original author as sender when relayed.
        if msg.sender_id != conn.peer.peer_id and not isinstance(msg, Ephemeral):
            logger.warning(
                "peer %s sent a %s as %r: dropped", conn.peer.peer_id, msg.type, msg.sender_id
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
            logger.info("peer %s reported an error: %s", conn.peer.peer_id, msg.message)
        elif isinstance(msg, (Leave, RemoteSubscriptionChange, RemoteHeadsChanged)):
            pass  # advisory / remote-heads gossip is off (protocol §3.10)
        elif isinstance(msg, UnknownMessage):
            logger.debug("peer %s: ignoring unknown message type %r", conn.peer.peer_id, msg.type)
        elif isinstance(msg, Peer):
            logger.debug("peer %s sent a 'peer' message to a server: ignored", conn.peer.peer_id)

    def _join(self, conn: _Connection, msg: Join) -> None:
        versions = msg.supported_protocol_versions
        if versions is not None and PROTOCOL_VERSION not in versions:
            self._fail(conn, "unsupported protocol version", target=msg.sender_id)
            return
        if conn.peer is not None:
            self._forget_peer(conn)  # a second join on one socket resets it
        old_id = self._peers.get(msg.sender_id)
        if old_id is not None and old_id != conn.conn_id:
            old = self._conns.pop(old_id)
            logger.info("peer %s reconnected: closing its old connection", msg.sender_id)
            self._fx.close.append((old_id, CLOSE_NORMAL, "replaced by a newer connection"))
            self._forget_peer(old)
        meta = msg.peer_metadata or PeerMetadata()
        conn.peer = PeerInfo(
            peer_id=msg.sender_id,
            storage_id=meta.storage_id,
            is_ephemeral=meta.is_ephemeral is not False,
            identity=conn.identity,
            remote_address=conn.remote_address,
        )
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

    def _sync_message(self, conn: _Connection, msg: Request | Sync) -> None:
        assert conn.peer is not None
        doc_id = msg.document_id
        decision = self._decide(conn.peer, doc_id)
        if decision is False:
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))
            return
        doc = self._docs.get(doc_id)
        if doc is None:
            if doc_id in self._stored:
                doc = self._docs[doc_id] = _Doc(doc_id, _DocState.LOADING)
                self._fx.load.append(doc_id)
            else:
                doc = self._docs[doc_id] = _Doc(doc_id, _DocState.MISSING)
        if doc.state is _DocState.LOADING:
            conn.parked.appendleft(msg)
            conn.waiting_for = doc_id
            return
        pd = doc.peers.get(conn.conn_id)
        first_contact = pd is None
        if pd is None:
            pd = doc.peers[conn.conn_id] = _PeerDoc()
            conn.docs.add(doc_id)
        pd.interacted = True
        brings_data = sync_message_has_heads(msg.data)
        if isinstance(msg, Request):
            pd.status = _Status.WANTS
        if brings_data:
            pd.status = _Status.HAS

        if doc.state is _DocState.BROKEN:
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))
            return
        created = doc.doc is None
        if doc.doc is None:
            if brings_data:
                doc.doc = am.Document()
                doc.state = _DocState.READY
                logger.info("document %s created by peer %s", doc_id, conn.peer.peer_id)
            elif self.create_on_request:
                doc.doc = am.Document()
                doc.state = _DocState.READY
                self._fx.writes.append((doc_id, doc.doc.save()))
                logger.info("document %s created empty on request (R mode)", doc_id)
            else:
                self._unavailable(conn, doc_id, pd, again=isinstance(msg, Request))
                return
        elif not doc.heads() and not brings_data and not self.create_on_request:
            # Announced by a peer whose changes have not arrived yet.
            self._unavailable(conn, doc_id, pd, again=isinstance(msg, Request))
            return

        if pd.owes_reply and _silences_reply(msg.data, doc):
            # Replies are batched, but a message with no changes that
            # advertises exactly our heads makes the core believe the peer
            # knows our heads, and it would never answer the message before
            # it: the peer would wait forever. Answer that one first.
            self._sync_to(doc, conn.conn_id, pd)
        before = doc.heads()
        try:
            doc.doc.receive_sync_message(pd.sync_state, am.Message.decode(msg.data))
        except Exception as exc:
            if created and not doc.heads():
                doc.doc, doc.state = None, _DocState.MISSING  # nothing came of it
            self._fail(conn, f"invalid sync message for {doc_id}: {exc}")
            return
        pd.owes_reply = True
        if doc.doc.get_heads() != before:
            self._record_changes(doc)
            if not before:  # the document's first changes: share it
                self._announce_to_all(doc)
        if first_contact:
            # A peer opening a document (a fetch) is answered at once, not
            # with the next round of a busy document.
            self._sync_to(doc, conn.conn_id, pd)
        # The reply is generated with the other peers' messages: a burst of
        # messages for one document then costs one reply per peer.
        self._dirty.add(doc_id)

    def _unavailable(
        self, conn: _Connection, doc_id: DocumentId, pd: _PeerDoc, *, again: bool
    ) -> None:
        # Nobody here has it. The peer stays registered: if the document
        # arrives later it is pushed to it (late arrival). A request is
        # always answered; other messages once.
        assert conn.peer is not None
        if again or pd.status is not _Status.UNAVAILABLE:
            pd.status = _Status.UNAVAILABLE
            self._send(conn.conn_id, DocUnavailable(self.peer_id, conn.peer.peer_id, doc_id))

    def _ephemeral(self, conn: _Connection, msg: Ephemeral) -> None:
        assert conn.peer is not None
        doc = self._docs.get(msg.document_id)
        if doc is None or doc.state is not _DocState.READY:
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
            doc.peers[conn.conn_id] = _PeerDoc(interacted=True)
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
            pd.status = _Status.UNAVAILABLE

    # -- helpers ---------------------------------------------------------------

    def _drain_parked(self, conn: _Connection) -> None:
        while conn.parked and conn.waiting_for is None and conn.conn_id in self._conns:
            self._handle(conn, conn.parked.popleft())

    def _record_changes(self, doc: _Doc) -> None:
        assert doc.doc is not None
        changes = doc.doc.get_changes(doc.saved_heads)
        if changes:
            self._fx.writes.append((doc.doc_id, b"".join(c.bytes for c in changes)))
        doc.saved_heads = doc.doc.get_heads()
        doc.version += 1

    def _sync_to(self, doc: _Doc, conn_id: ConnectionId, pd: _PeerDoc) -> None:
        conn = self._conns.get(conn_id)
        if conn is None or conn.peer is None or doc.doc is None:
            return
        if not pd.owes_reply and pd.synced_version == doc.version:
            return
        if not self._may_receive(conn.peer, doc, pd):
            return
        pd.owes_reply = False
        pd.synced_version = doc.version
        message = doc.doc.generate_sync_message(pd.sync_state)
        if message is not None:
            self._send(conn_id, Sync(self.peer_id, conn.peer.peer_id, doc.doc_id, message.encode()))

    def _may_receive(self, peer: PeerInfo, doc: _Doc, pd: _PeerDoc | None) -> bool:
        decision = self._decide(peer, doc.doc_id)
        if decision is False:
            return False
        return decision is True or (pd is not None and pd.interacted)

    def _announce_to_peer(self, conn: _Connection) -> None:
        assert conn.peer is not None
        if self.share == "request" or self.share == "deny":
            return
        for doc in list(self._docs.values()):
            if doc.state is _DocState.READY and self._decide(conn.peer, doc.doc_id) is True:
                self._engage_and_sync(doc, conn)
        # Stored documents not in memory yet are announced once loaded.
        for doc_id in self._stored_ids():
            if doc_id not in self._docs and self._decide(conn.peer, doc_id) is True:
                self._docs[doc_id] = _Doc(doc_id, _DocState.LOADING)
                self._fx.load.append(doc_id)

    def _announce_to_all(self, doc: _Doc) -> None:
        if self.share == "request" or self.share == "deny" or not doc.heads():
            return
        for conn in self._conns.values():
            if conn.peer is not None and self._decide(conn.peer, doc.doc_id) is True:
                self._engage_and_sync(doc, conn)

    def _engage_and_sync(self, doc: _Doc, conn: _Connection) -> None:
        if not doc.heads():
            return
        pd = doc.peers.get(conn.conn_id)
        if pd is None:
            pd = doc.peers[conn.conn_id] = _PeerDoc()
            conn.docs.add(doc.doc_id)
            self._sync_to(doc, conn.conn_id, pd)

    def _stored_ids(self) -> Iterator[DocumentId]:
        ids = getattr(self._stored, "document_ids", None)
        if callable(ids):
            yield from ids()
        elif isinstance(self._stored, Iterable):
            yield from self._stored

    def _decide(self, peer: PeerInfo, doc_id: DocumentId) -> ShareDecision:
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

    def _ready(self, doc_id: DocumentId) -> _Doc:
        doc = self._docs.get(doc_id)
        if doc is None or doc.state is not _DocState.READY:
            raise KeyError(doc_id)
        return doc

    def _forget_peer(self, conn: _Connection) -> None:
        for doc_id in conn.docs:
            doc = self._docs.get(doc_id)
            if doc is None:
                continue
            doc.peers.pop(conn.conn_id, None)
            if doc.state is _DocState.MISSING and not doc.peers:
                del self._docs[doc_id]
        conn.docs.clear()
        conn.parked.clear()
        conn.waiting_for = None
        if conn.peer is not None:
            if self._peers.get(conn.peer.peer_id) == conn.conn_id:
                del self._peers[conn.peer.peer_id]
            sender = conn.peer.peer_id
            for key in [k for k in self._ephemeral_seen if k[0] == sender]:
                del self._ephemeral_seen[key]
            conn.peer = None

    def _fail(self, conn: _Connection, reason: str, target: PeerId | None = None) -> None:
        peer_id = conn.peer.peer_id if conn.peer else target
        logger.warning("closing connection of %s: %s", peer_id or conn.remote_address, reason)
        self._send(conn.conn_id, Error(self.peer_id, reason, target_id=peer_id))
        self._fx.close.append((conn.conn_id, CLOSE_PROTOCOL_ERROR, reason[:120]))
        del self._conns[conn.conn_id]
        self._forget_peer(conn)

    def _send(self, conn_id: ConnectionId, msg: Message) -> None:
        self._fx.send.append((conn_id, msg))

    def _take(self) -> Effects:
        fx, self._fx = self._fx, Effects()
        return fx


def _silences_reply(data: bytes, doc: _Doc) -> bool:
    summary = sync_message_heads(data)
    if summary is None:
        return True
    heads, has_changes = summary
    return not has_changes and sorted(heads) == sorted(doc.heads())


# Salvaging re-loads the document once per chunk per pass; beyond this many
# chunks give up rather than stall the loop.
_MAX_SALVAGE_CHUNKS = 2_000


def _load(doc_id: DocumentId, data: bytes) -> am.Document | None:
    """Load stored bytes; salvage what can be loaded if a change is missing.

    The store has already set damaged bytes aside, but a lost change in the
    middle of the history makes the binding refuse every change after it
    ("deps should already be in the document"), as it has no partial load.
    Then keep every chunk whose history is complete, and serve that.
    """
    try:
        return am.Document.load(data)
    except Exception as exc:
        logger.error("document %s: stored data does not load (%s); salvaging", doc_id, exc)
    pending = split_chunks(data)
    if len(pending) > _MAX_SALVAGE_CHUNKS:
        logger.error("document %s: %d chunks, too many to salvage", doc_id, len(pending))
        return None
    good = b""
    progress = True
    while pending and progress:
        progress = False
        for chunk in list(pending):
            try:
                am.Document.load(good + chunk)
            except Exception:
                continue
            good += chunk
            pending.remove(chunk)
            progress = True
    if not good:
        logger.error("document %s: nothing could be salvaged", doc_id)
        return None
    logger.warning(
        "document %s: served without %d chunk(s) whose history is missing", doc_id, len(pending)
    )
    return am.Document.load(good)
