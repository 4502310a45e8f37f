"""The client side of the sync protocol: one peer's documents and its conversation with a server.

Like :mod:`.hub`, the peer is sans-I/O: it never touches a socket, a clock or
an event loop. A driver tells it what happened (:meth:`ClientPeer.connected`,
:meth:`ClientPeer.receive`, :meth:`ClientPeer.local_change`,
:meth:`ClientPeer.disconnected`) and gets back :class:`PeerEffects`:
messages to send, documents whose state changed, documents a remote change
reached, ephemeral messages to hand to listeners, documents the server
offered unasked, and what it said that cannot be used. Whether a change is
acknowledged, or an answer was empty, is asked with queries
(:meth:`ClientPeer.acknowledged`, :meth:`ClientPeer.answered_empty`,
:meth:`ClientPeer.in_sync`). The live :class:`~autosync_jupyter.runtime.connection.Connection`
and :func:`~autosync_jupyter.runtime.client.fetch` both drive it.

The rules, and where they live:

* a document we lack is opened with ``request``, one we hold with ``sync``
  (protocol §3.2, §3.3) (:meth:`ClientPeer._start`);
* every connection starts from fresh sync states, and every open document
  is sent again on it (§4.2) (:meth:`ClientPeer.connected`);
* a server's sync message reaches the Automerge core only after its changes
  were checked, alone and against the document, and what the core applied
  is checked again (a server is a peer like any other)
  (:meth:`ClientPeer._apply_sync`);
* ``doc-unavailable`` makes a document without data unavailable; data that
  arrives later still makes it ready (§3.9) (:meth:`ClientPeer.receive`);
* an answer that advertises no heads while nothing is here means the server
  holds nothing for the id (:meth:`ClientPeer.answered_empty`); how long to
  wait for more is the driver's (it has the clock), and it reports the
  conclusion with :meth:`ClientPeer.conclude_empty`. The server will not
  answer a new request for such a document on the same connection, so the
  peer remembers the empty answer until the connection ends;
* the server acknowledged our changes once the heads it advertised include
  them (:meth:`ClientPeer.acknowledged`);
* local changes are sent once per :meth:`ClientPeer.push`, which the driver
  calls once per loop turn, so a burst of edits is one message;
* sync work on a document with an open change
  (:func:`~autosync_jupyter.crdt.binding.is_transaction_open`) waits, in
  order, and the effects ask the driver to call :meth:`ClientPeer.retry`
  shortly.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar

import automerge.core as am

from ..crdt.binding import is_panic, is_transaction_open
from ..crdt.guard import Admission, DocumentGuard, Limits, Rejected, admit, verify_applied
from ..crdt.sync_message import SyncMessageRejected, read_sync_message
from ..errors import ProtocolError
from ..ids import DocumentId, PeerId, generate_peer_id
from .protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DocUnavailable,
    Ephemeral,
    Error,
    Message,
    Request,
    Sync,
)

__all__ = ["ClientPeer", "DocumentState", "PeerEffects"]

T = TypeVar("T")

DocumentState: TypeAlias = Literal["requesting", "ready", "unavailable"]
"""Where a document is: asked for, holding data (or an accepted empty
document), or told the server does not have it."""


@dataclass
class PeerEffects:
    """What the driver must do after a :class:`ClientPeer` call, in this order."""

    #: Messages for the server, in order.
    send: list[Message] = field(default_factory=list)
    #: ``(document, new state)`` for every state change.
    states: list[tuple[DocumentId, DocumentState]] = field(default_factory=list)
    #: Documents a sync message from the server was applied to.
    applied: list[DocumentId] = field(default_factory=list)
    #: ``(document, heads before)``: a remote change reached the document;
    #: tell its listeners (``Document.notify("remote", before)``).
    changed: list[tuple[DocumentId, list[bytes]]] = field(default_factory=list)
    #: ``(document, sender, data)``: ephemeral messages for open documents.
    ephemeral: list[tuple[DocumentId, PeerId, bytes]] = field(default_factory=list)
    #: Documents the server sent although they are not open here.
    offered: list[DocumentId] = field(default_factory=list)
    #: Why sync messages from the server were refused (nothing of them applied).
    rejected: list[str] = field(default_factory=list)
    #: Texts of ``error`` messages from the server.
    server_errors: list[str] = field(default_factory=list)
    #: A change is open on a document: call :meth:`ClientPeer.retry` shortly.
    retry: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.send
            or self.states
            or self.applied
            or self.changed
            or self.ephemeral
            or self.offered
            or self.rejected
            or self.server_errors
            or self.retry
        )


class _ChangeOpen(Exception):
    """The document has an open change; sync work on it must wait."""


def _sync_call(call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as exc:
        if is_transaction_open(exc):
            raise _ChangeOpen() from None
        raise


_NO_LOCK: AbstractContextManager[Any] = contextlib.nullcontext()


@dataclass(eq=False)
class _Doc:
    """One open document and its conversation with the server on the current connection."""

    doc_id: DocumentId
    core: am.Document
    lock: AbstractContextManager[Any]
    state: DocumentState
    sync_state: am.SyncState = field(default_factory=am.SyncState)
    # The heads the server last advertised on this connection (None: it has
    # said nothing yet).
    server_heads: list[bytes] | None = None
    # Checks the server's changes before the core takes them.
    guard: DocumentGuard | None = None
    # Sync messages that wait for an open change to end, in order.
    parked: deque[bytes] = field(default_factory=deque)
    # The opening message could not be made (a change was open): retry it.
    restart: bool = False
    # The connection (by number) this document was last started on.
    started_on: int | None = None


class ClientPeer:
    """The sans-I/O client side of the automerge-repo protocol, for one server.

    Args:
        peer_id: this peer's id (the sender of every message).
        session_id: the ephemeral session id (random if omitted).
        limits: what one sync message from the server may unpack to.
    """

    def __init__(
        self,
        peer_id: PeerId,
        *,
        session_id: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.session_id = session_id or generate_peer_id("session").split("-", 1)[1]
        self.limits = limits or Limits.for_message_size(DEFAULT_MAX_MESSAGE_SIZE)
        self._server: PeerId | None = None
        self._link = 0  # bumped on every connection
        self._docs: dict[DocumentId, _Doc] = {}
        # Documents the server answered with an empty document on this
        # connection. It will not say so again to a new request for one
        # (after its handle was dropped): its sync state has nothing new
        # for us. It does send the document if it has gained changes since.
        self._empty_answers: set[DocumentId] = set()
        self._to_push: dict[DocumentId, None] = {}
        self._ephemeral_count = 0
        self._fx = PeerEffects()

    # -- the connection ------------------------------------------------------------

    @property
    def server(self) -> PeerId | None:
        """The server's peer id while connected, else None."""
        return self._server

    def connected(self, server: PeerId) -> PeerEffects:
        """A connection is up and the server (``server``) answered ``join``.

        Every open document starts afresh on it: a new sync state, and its
        opening message (``request`` or ``sync``).
        """
        self._server = server
        self._link += 1
        self._empty_answers.clear()
        for doc in list(self._docs.values()):
            self._start(doc)
        return self._take()

    def disconnected(self) -> PeerEffects:
        """The connection dropped: unavailable documents are asked for again on the next one."""
        self._server = None
        for doc in self._docs.values():
            if doc.state == "unavailable":
                self._set_state(doc, "requesting")
        return self._take()

    # -- documents -----------------------------------------------------------------

    def open(
        self,
        doc_id: DocumentId,
        core: am.Document,
        *,
        lock: AbstractContextManager[Any] | None = None,
    ) -> PeerEffects:
        """Start syncing ``core`` as ``doc_id``: ``ready`` if it holds changes, else ``requesting``.

        ``lock`` is held around every use of ``core`` (for edits made from
        other threads).

        Raises:
            ValueError: ``doc_id`` is open already.
        """
        if doc_id in self._docs:
            raise ValueError(f"document {doc_id} is open already")
        lock = lock if lock is not None else _NO_LOCK
        with lock:
            has_data = bool(core.get_heads())
        doc = _Doc(doc_id, core, lock, "ready" if has_data else "requesting")
        self._docs[doc_id] = doc
        if self._server is not None:
            self._start(doc)
            if doc_id in self._empty_answers:
                doc.server_heads = []  # it said so earlier on this connection
        return self._take()

    def close(self, doc_id: DocumentId) -> None:
        """Stop syncing ``doc_id`` (nothing is said to the server)."""
        self._docs.pop(doc_id, None)
        self._to_push.pop(doc_id, None)

    def is_open(self, doc_id: DocumentId) -> bool:
        """Whether ``doc_id`` is open."""
        return doc_id in self._docs

    def state(self, doc_id: DocumentId) -> DocumentState | None:
        """The state of ``doc_id``, None if it is not open."""
        doc = self._docs.get(doc_id)
        return doc.state if doc is not None else None

    def local_change(self, doc_id: DocumentId) -> PeerEffects:
        """A change was made here: the document holds data, and it is sent on :meth:`push`."""
        doc = self._docs.get(doc_id)
        if doc is None:
            return self._take()
        if doc.state != "ready":
            with contextlib.suppress(_ChangeOpen), doc.lock:
                if _sync_call(doc.core.get_heads):
                    self._set_state(doc, "ready")
        self._to_push[doc_id] = None
        return self._take()

    def pending_push(self) -> bool:
        """Whether local changes wait for :meth:`push`."""
        return bool(self._to_push)

    def push(self) -> PeerEffects:
        """Send what changed locally since the last push (dropped while disconnected).

        A reconnect sends everything anew from a fresh sync state.
        """
        self._push()
        return self._take()

    def _push(self) -> None:
        pending, self._to_push = self._to_push, {}
        if self._server is None:
            return
        for doc_id in pending:
            doc = self._docs.get(doc_id)
            if doc is None or doc.restart:
                continue  # closed, or a pending opening message carries everything
            try:
                with doc.lock:
                    message = self._generate(doc)
                    if doc.state != "ready" and _sync_call(doc.core.get_heads):
                        self._set_state(doc, "ready")
            except _ChangeOpen:
                self._to_push[doc_id] = None
                self._fx.retry = True
                continue
            if message is not None:
                self._fx.send.append(message)

    def retry(self) -> PeerEffects:
        """Try again what waited for an open change to end: openings, parked messages, pushes."""
        if self._server is not None:
            for doc in list(self._docs.values()):
                if doc.restart:
                    self._start(doc)
                    if doc.restart:
                        continue
                while doc.parked:
                    if not self._apply(doc, doc.parked[0]):
                        self._fx.retry = True
                        break
                    doc.parked.popleft()
        if self._to_push:
            self._push()
        return self._take()

    def broadcast(self, doc_id: DocumentId, data: bytes) -> PeerEffects:
        """An ephemeral message (CBOR ``data``) for the document's other peers.

        Best effort, as in automerge-repo: nothing is sent while disconnected.
        """
        if self._server is not None and doc_id in self._docs:
            self._ephemeral_count += 1
            self._fx.send.append(
                Ephemeral(
                    sender_id=self.peer_id,
                    target_id=self._server,
                    document_id=doc_id,
                    session_id=self.session_id,
                    count=self._ephemeral_count,
                    data=data,
                )
            )
        return self._take()

    def conclude_empty(self, doc_id: DocumentId, *, accept: bool) -> PeerEffects:
        """The driver waited long enough after an empty answer: the server holds nothing.

        The answer is remembered for this connection (a new request for the
        id would get none); ``accept`` makes the empty document ``ready``.
        """
        doc = self._docs.get(doc_id)
        if doc is None:
            return self._take()
        if doc.started_on == self._link:
            self._empty_answers.add(doc_id)
        if accept:
            self._set_state(doc, "ready")
        return self._take()

    # -- what the server says --------------------------------------------------------

    def receive(self, msg: Message) -> PeerEffects:
        """Handle one message from the server."""
        if isinstance(msg, (Sync, Request)):
            doc = self._docs.get(msg.document_id)
            if doc is None:
                self._fx.offered.append(msg.document_id)
            elif doc.parked or doc.restart:
                doc.parked.append(msg.data)  # in order, behind what already waits
            elif not self._apply(doc, msg.data):
                doc.parked.append(msg.data)
                self._fx.retry = True
        elif isinstance(msg, DocUnavailable):
            doc = self._docs.get(msg.document_id)
            if doc is not None:
                try:
                    with doc.lock:
                        has_data = bool(_sync_call(doc.core.get_heads))
                except _ChangeOpen:
                    has_data = True  # a change is being made here: it will hold data
                if not has_data:
                    self._set_state(doc, "unavailable")
        elif isinstance(msg, Ephemeral):
            if msg.document_id in self._docs:
                self._fx.ephemeral.append((msg.document_id, msg.sender_id, msg.data))
        elif isinstance(msg, Error):
            self._fx.server_errors.append(msg.message)
        return self._take()

    # -- queries -------------------------------------------------------------------

    def server_heads(self, doc_id: DocumentId) -> list[bytes] | None:
        """The heads the server last advertised for ``doc_id`` on this connection."""
        doc = self._docs.get(doc_id)
        return None if doc is None or doc.server_heads is None else list(doc.server_heads)

    def answered_empty(self, doc_id: DocumentId) -> bool:
        """The server's last answer advertised no heads, and nothing has arrived here.

        A server that holds nothing for the id says so. (The message may
        still carry a change chunk: JS 2.x sends a compressed empty document.)
        """
        doc = self._docs.get(doc_id)
        return (
            doc is not None
            and doc.server_heads is not None
            and not doc.server_heads
            and not doc.core.get_heads()
        )

    def in_sync(self, doc_id: DocumentId) -> bool:
        """The server advertised heads (non-empty) and every one of them is here."""
        doc = self._docs.get(doc_id)
        if doc is None or not doc.server_heads:
            return False
        return set(doc.server_heads) <= set(doc.core.get_heads())

    def acknowledged(self, doc_id: DocumentId, heads: list[bytes]) -> bool:
        """Whether the server holds ``heads`` of ``doc_id``: it advertised heads that include them.

        Never while disconnected, nor while local changes wait for :meth:`push`.
        """
        doc = self._docs.get(doc_id)
        if doc is None or self._server is None or doc_id in self._to_push:
            return False
        if not heads:
            return True
        server = doc.server_heads
        if server is None:
            return False
        if set(heads) <= set(server):
            return True
        if not server:
            return False
        # Changes after the server's heads; an unknown server head makes this
        # return everything, which errs on the side of "not yet".
        try:
            newer = {change.hash for change in doc.core.get_changes(server)}
        except Exception:  # a change is open: ask again later
            return False
        return not any(head in newer for head in heads)

    # -- internals -----------------------------------------------------------------

    def _start(self, doc: _Doc) -> None:
        """A fresh sync state on this connection, and the opening message."""
        assert self._server is not None
        with doc.lock:
            doc.started_on = self._link
            doc.sync_state = am.SyncState()
            doc.server_heads = None
            doc.parked.clear()
            try:
                message = _sync_call(lambda: doc.core.generate_sync_message(doc.sync_state))
                has_data = bool(_sync_call(doc.core.get_heads))
            except _ChangeOpen:
                doc.restart = True
                self._fx.retry = True
                return
            doc.restart = False
        assert message is not None, "a fresh sync state always has something to say"
        cls = Sync if has_data else Request
        self._fx.send.append(cls(self.peer_id, self._server, doc.doc_id, message.encode()))

    def _apply(self, doc: _Doc, data: bytes) -> bool:
        """Apply one sync message and answer it; False: a change is open, it must wait."""
        with doc.lock:
            core = doc.core
            try:
                before = _sync_call(core.get_heads)
                try:
                    self._apply_sync(doc, data)
                except ProtocolError as exc:
                    self._fx.rejected.append(str(exc))
                    return True
            except _ChangeOpen:
                return False
            after = core.get_heads()
            if after and doc.state != "ready":
                self._set_state(doc, "ready")
            self._fx.applied.append(doc.doc_id)
            try:
                reply = self._generate(doc)
            except _ChangeOpen:
                # The message is applied; the answer goes out with the next push.
                self._to_push[doc.doc_id] = None
                self._fx.retry = True
                reply = None
            if reply is not None:
                self._fx.send.append(reply)
            if after != before:
                self._fx.changed.append((doc.doc_id, before))
        return True

    def _apply_sync(self, doc: _Doc, data: bytes) -> None:
        """Check one sync message from the server, then hand it to the core.

        Raises:
            ProtocolError: the bytes are not an Automerge sync message, or a
                change in it does not check.
            _ChangeOpen: a change is open on the document.
        """
        core = doc.core
        try:
            parsed = read_sync_message(data)
            admission = Admission()
            if parsed.changes:
                guard = doc.guard
                if guard is None:
                    guard = doc.guard = _sync_call(lambda: DocumentGuard(core))
                else:
                    _sync_call(guard.catch_up)
                admission = admit(guard, parsed, self.limits)
        except (SyncMessageRejected, Rejected) as exc:
            raise ProtocolError(f"invalid sync message for document {doc.doc_id}: {exc}") from None
        before = _sync_call(core.get_heads)
        try:
            _sync_call(lambda: core.receive_sync_message(doc.sync_state, am.Message.decode(data)))
        except _ChangeOpen:
            raise
        except BaseException as exc:
            if not is_panic(exc) and not isinstance(exc, Exception):
                raise
            raise ProtocolError(f"invalid sync message for document {doc.doc_id}: {exc}") from None
        if doc.guard is not None and core.get_heads() != before:
            if not before and admission.documents:
                doc.guard = None  # a whole document: rebuilt when next needed
            else:
                changes = core.get_changes(before)
                failure = verify_applied(doc.guard, changes, admission, {})
                if failure is not None:
                    raise ProtocolError(
                        f"the server sent a change that does not check: {failure.reason}"
                    )
        doc.server_heads = list(parsed.heads)

    def _generate(self, doc: _Doc) -> Sync | None:
        """The next sync message for the server, if there is something to say.

        Raises:
            _ChangeOpen: a change is open on the document.
        """
        assert self._server is not None
        message = _sync_call(lambda: doc.core.generate_sync_message(doc.sync_state))
        if message is None:
            return None
        return Sync(self.peer_id, self._server, doc.doc_id, message.encode())

    def _set_state(self, doc: _Doc, state: DocumentState) -> None:
        if doc.state != state:
            doc.state = state
            self._fx.states.append((doc.doc_id, state))

    def _take(self) -> PeerEffects:
        fx, self._fx = self._fx, PeerEffects()
        return fx
